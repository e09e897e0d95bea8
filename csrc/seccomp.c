/* Layer 2: the seccomp-bpf baseline, generated from syscall_table.h. */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "supervise.h"

#if defined(__x86_64__)
#define VB_AUDIT_ARCH AUDIT_ARCH_X86_64
#define VB_X32_BIT 0x40000000u
#elif defined(__aarch64__)
#define VB_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "viewbox: unsupported architecture (x86_64 and aarch64 are supported)"
#endif

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define VB_ARG_LO(n) (offsetof(struct seccomp_data, args) + 8 * (n))
#define VB_ARG_HI(n) (offsetof(struct seccomp_data, args) + 8 * (n) + 4)
#else
#define VB_ARG_LO(n) (offsetof(struct seccomp_data, args) + 8 * (n) + 4)
#define VB_ARG_HI(n) (offsetof(struct seccomp_data, args) + 8 * (n))
#endif

enum vb_how { VB_DENY, VB_DENY_FLAGS, VB_NOSYS };

struct vb_syscall_row {
    struct vb_syscall_info info;
    enum vb_how how;
    uint32_t mask;
};

struct vb_ioctl_row {
    struct vb_syscall_info info;
    uint32_t request;
};

static const struct vb_syscall_row syscall_rows[] = {
#define VB_SYSCALL(name, group, how, mask, note) {{#name, __NR_##name, group, note}, how, mask},
#define VB_IOCTL(request, name, group, note)
#define VB_INTERPOSE(name, family, args, note)
#include "syscall_table.h"
#undef VB_SYSCALL
#undef VB_IOCTL
#undef VB_INTERPOSE
};

static const struct vb_ioctl_row ioctl_rows[] = {
#define VB_SYSCALL(name, group, how, mask, note)
#define VB_IOCTL(request, name, group, note) {{"ioctl:" #name, __NR_ioctl, group, note}, request},
#define VB_INTERPOSE(name, family, args, note)
#include "syscall_table.h"
#undef VB_SYSCALL
#undef VB_IOCTL
#undef VB_INTERPOSE
};

/* The time view's rows. */
static const struct vb_time_info time_rows[] = {
#define VB_SYSCALL(name, group, how, mask, note)
#define VB_IOCTL(request, name, group, note)
#define VB_INTERPOSE(name, family, args, note)
#define VB_TIME_CLOCK(name, trap, args, note) {#name, __NR_##name, trap, note},
#define VB_TIME(name, trap, note) {#name, __NR_##name, trap, note},
#include "syscall_table.h"
#undef VB_SYSCALL
#undef VB_IOCTL
#undef VB_INTERPOSE
#undef VB_TIME_CLOCK
#undef VB_TIME
};

/* MONOTONIC_RAW goes with the REALTIME ids: the time namespace shifts it by
 * MONOTONIC's offset, but it drifts from MONOTONIC (NTP), so natively it
 * would not agree with the sandbox's MONOTONIC, and could even be negative. */
const struct vb_time_info *vb_time_table(size_t *count)
{
    *count = VB_ARRAY_LEN(time_rows);
    return time_rows;
}

/* The trap bits of clock reads (VB_TIME_CLOCK rows): answered by the supervisor. */
#define CLOCK_TRAPS (VB_TRAP_CLOCK_REAL | VB_TRAP_CLOCK_MONO)

/* The clock ids each trap bit covers for clock_gettime. */
static const uint32_t real_clock_ids[] = {CLOCK_REALTIME, CLOCK_REALTIME_COARSE, CLOCK_REALTIME_ALARM, CLOCK_TAI,
                                          CLOCK_MONOTONIC_RAW};
static const uint32_t mono_clock_ids[] = {CLOCK_MONOTONIC, CLOCK_MONOTONIC_COARSE, CLOCK_BOOTTIME,
                                          CLOCK_BOOTTIME_ALARM};

/* The supervisor's rows: VB_INTERPOSE, and the time view's clock reads. */
static const struct vb_interpose_info interpose_rows[] = {
#define VB_SYSCALL(name, group, how, mask, note)
#define VB_IOCTL(request, name, group, note)
#define VB_INTERPOSE(name, family, args, note) {#name, __NR_##name, family, args, note, sys_##name},
#define VB_TIME_CLOCK(name, trap, args, note) {#name, __NR_##name, VB_FAMILY_CLOCK, args, note, sys_##name},
#define VB_TIME(name, trap, note)
#include "syscall_table.h"
#undef VB_SYSCALL
#undef VB_IOCTL
#undef VB_INTERPOSE
#undef VB_TIME_CLOCK
#undef VB_TIME
};

const struct vb_interpose_info *vb_interpose_table(size_t *count)
{
    *count = VB_ARRAY_LEN(interpose_rows);
    return interpose_rows;
}

const struct vb_interpose_info *vb_interpose_row(int nr)
{
    for (size_t i = 0; i < VB_ARRAY_LEN(interpose_rows); i++)
        if (interpose_rows[i].nr == nr)
            return &interpose_rows[i];
    return NULL;
}

/* syscall rows then ioctl rows, for vb_syscall_table() */
static struct vb_syscall_info table_view[VB_ARRAY_LEN(syscall_rows) + VB_ARRAY_LEN(ioctl_rows)];

const struct vb_syscall_info *vb_syscall_table(size_t *count)
{
    size_t n = 0;
    for (size_t i = 0; i < VB_ARRAY_LEN(syscall_rows); i++)
        table_view[n++] = syscall_rows[i].info;
    for (size_t i = 0; i < VB_ARRAY_LEN(ioctl_rows); i++)
        table_view[n++] = ioctl_rows[i].info;
    *count = n;
    return table_view;
}

const char *vb_group_name(uint64_t group)
{
    switch (group) {
    case VB_GROUP_IO_URING: return "io_uring";
    case VB_GROUP_BPF: return "bpf";
    case VB_GROUP_PTRACE: return "ptrace";
    case VB_GROUP_KEYS: return "keys";
    case VB_GROUP_PERF: return "perf";
    case VB_GROUP_USERFAULT: return "userfaultfd";
    case VB_GROUP_HANDLES: return "handles";
    case VB_GROUP_MOUNT: return "mount";
    case VB_GROUP_NAMESPACE: return "namespace";
    case VB_GROUP_KERNEL: return "kernel";
    case VB_GROUP_TIME_SET: return "time_set";
    case VB_GROUP_TTY_INJECT: return "tty_inject";
    case VB_GROUP_MEMORY: return "memory";
    case VB_GROUP_ALWAYS: return "always";
    default: return NULL;
    }
}

static int row_denied(const struct vb_syscall_row *row, uint64_t deny_groups)
{
    return row->info.group == VB_GROUP_ALWAYS || (row->info.group & deny_groups) != 0;
}

static const struct vb_syscall_row *first_denied_row(int nr, uint64_t deny_groups)
{
    for (size_t i = 0; i < VB_ARRAY_LEN(syscall_rows); i++)
        if (syscall_rows[i].info.nr == nr && row_denied(&syscall_rows[i], deny_groups))
            return &syscall_rows[i];
    return NULL;
}

/* Whether the time view takes `nr` over (clock_adjtime): its deny row gives
 * way, since the view's handler refuses what the row is there for (setting
 * the clock) and answers a read with the sandbox's time. */
static int time_answers(int nr, uint64_t time_traps)
{
    for (size_t i = 0; i < VB_ARRAY_LEN(time_rows); i++)
        if (time_rows[i].nr == nr && (time_rows[i].trap & time_traps))
            return 1;
    return 0;
}

#define RET(action) BPF_STMT(BPF_RET | BPF_K, (action))
#define DENY RET(SECCOMP_RET_ERRNO | EPERM)

struct prog {
    struct sock_filter *insns;
    size_t len, cap;
};

static int emit(struct prog *p, struct sock_filter insn)
{
    if (p->len >= p->cap)
        return -ENOSPC;
    p->insns[p->len++] = insn;
    return 0;
}

#define EMIT(p, insn) do { int rc_ = emit((p), (struct sock_filter)insn); if (rc_) return rc_; } while (0)

/* The program, top to bottom: wrong architecture -> kill; x32 ABI -> ENOSYS;
 * then one short block per denied syscall, each ending in a RET so that jumps
 * stay within the 8-bit offsets of classic BPF; everything else -> ALLOW.
 * Allowed calls never depend on arguments except clone/unshare/ioctl, so the
 * kernel's per-syscall action cache makes them free. */
int vb_seccomp_build(uint64_t deny_groups, uint64_t interpose_families, uint64_t time_traps, void *out,
                     size_t capacity)
{
    struct prog p = {out, 0, capacity};
    /* clock reads go to the supervisor: a time view needs VB_FAMILY_CLOCK interposed */
    if ((time_traps & CLOCK_TRAPS) && !(interpose_families & VB_FAMILY_CLOCK))
        return -EINVAL;

    EMIT(&p, BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)));
    EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, VB_AUDIT_ARCH, 1, 0));
    EMIT(&p, RET(SECCOMP_RET_KILL_PROCESS)); /* 32-bit ABIs (int 0x80) and foreign arches */
    EMIT(&p, BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
#ifdef VB_X32_BIT
    EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, VB_X32_BIT, 0, 1));
    EMIT(&p, RET(SECCOMP_RET_ERRNO | ENOSYS));
#endif

    for (size_t i = 0; i < VB_ARRAY_LEN(syscall_rows); i++) {
        const struct vb_syscall_row *row = &syscall_rows[i];
        if (!row_denied(row, deny_groups) || first_denied_row(row->info.nr, deny_groups) != row ||
            time_answers(row->info.nr, time_traps))
            continue; /* a syscall's denied rows make one block, at its first */
        enum vb_how how = VB_DENY_FLAGS;
        uint32_t mask = 0;
        for (size_t k = i; k < VB_ARRAY_LEN(syscall_rows); k++) {
            const struct vb_syscall_row *same = &syscall_rows[k];
            if (same->info.nr != row->info.nr || !row_denied(same, deny_groups))
                continue;
            if (same->how == VB_DENY || (same->how == VB_NOSYS && how != VB_DENY))
                how = same->how; /* the whole call: it overrides a flag check */
            mask |= same->mask;
        }
        switch (how) {
        case VB_DENY:
            EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)row->info.nr, 0, 1));
            EMIT(&p, DENY);
            break;
        case VB_NOSYS:
            EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)row->info.nr, 0, 1));
            EMIT(&p, RET(SECCOMP_RET_ERRNO | ENOSYS));
            break;
        case VB_DENY_FLAGS:
            /* the accumulator is overwritten, so both branches return */
            EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)row->info.nr, 0, 4));
            EMIT(&p, BPF_STMT(BPF_LD | BPF_W | BPF_ABS, VB_ARG_LO(0)));
            EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, mask, 0, 1));
            EMIT(&p, DENY);
            EMIT(&p, RET(SECCOMP_RET_ALLOW));
            break;
        }
    }

    size_t n_ioctls = 0;
    for (size_t i = 0; i < VB_ARRAY_LEN(ioctl_rows); i++)
        n_ioctls += (ioctl_rows[i].info.group & deny_groups) != 0;
    if (n_ioctls) {
        /* skip: the load, two insns per request, the final allow */
        EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 0, (uint8_t)(2 * n_ioctls + 2)));
        EMIT(&p, BPF_STMT(BPF_LD | BPF_W | BPF_ABS, VB_ARG_LO(1)));
        for (size_t i = 0; i < VB_ARRAY_LEN(ioctl_rows); i++) {
            if (!(ioctl_rows[i].info.group & deny_groups))
                continue;
            EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ioctl_rows[i].request, 0, 1));
            EMIT(&p, DENY);
        }
        EMIT(&p, RET(SECCOMP_RET_ALLOW));
    }

    /* after every deny: a denied call never reaches the supervisor */
    for (size_t i = 0; i < VB_ARRAY_LEN(interpose_rows); i++) {
        if (!(interpose_rows[i].family & interpose_families) || interpose_rows[i].family == VB_FAMILY_CLOCK)
            continue; /* clock reads: below, with the time view's rows */
        if (interpose_rows[i].nr == __NR_sendto) {
            /* send() is sendto without an address: it can only reach the socket's peer
             * (which connect() let through), unless MSG_FASTOPEN makes it connect. The
             * address is a register, so the filter decides that without the supervisor. */
            EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_sendto, 0, 8));
            EMIT(&p, BPF_STMT(BPF_LD | BPF_W | BPF_ABS, VB_ARG_LO(4)));
            EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 5));
            EMIT(&p, BPF_STMT(BPF_LD | BPF_W | BPF_ABS, VB_ARG_HI(4)));
            EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 3));
            EMIT(&p, BPF_STMT(BPF_LD | BPF_W | BPF_ABS, VB_ARG_LO(3)));
            EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, MSG_FASTOPEN, 1, 0));
            EMIT(&p, RET(SECCOMP_RET_ALLOW));
            EMIT(&p, RET(SECCOMP_RET_USER_NOTIF));
            continue;
        }
        EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)interpose_rows[i].nr, 0, 1));
        EMIT(&p, RET(SECCOMP_RET_USER_NOTIF));
    }

    /* the time view: clock reads to the supervisor, the rest to the sandbox's
     * init, which traces the command */
    for (size_t i = 0; i < VB_ARRAY_LEN(time_rows); i++) {
        const struct vb_time_info *row = &time_rows[i];
        const uint32_t to = (row->trap & CLOCK_TRAPS) ? SECCOMP_RET_USER_NOTIF : SECCOMP_RET_TRACE;
        if (row->nr == __NR_clock_gettime) {
            uint32_t ids[VB_ARRAY_LEN(real_clock_ids) + VB_ARRAY_LEN(mono_clock_ids)];
            size_t n = 0;
            for (size_t k = 0; (time_traps & VB_TRAP_CLOCK_REAL) && k < VB_ARRAY_LEN(real_clock_ids); k++)
                ids[n++] = real_clock_ids[k];
            for (size_t k = 0; (time_traps & VB_TRAP_CLOCK_MONO) && k < VB_ARRAY_LEN(mono_clock_ids); k++)
                ids[n++] = mono_clock_ids[k];
            if (!n)
                continue;
            /* nr? load the clock id; each listed id jumps to the return at the end */
            EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)row->nr, 0, (uint8_t)(n + 3)));
            EMIT(&p, BPF_STMT(BPF_LD | BPF_W | BPF_ABS, VB_ARG_LO(0)));
            for (size_t k = 0; k < n; k++)
                EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ids[k], (uint8_t)(n - k), 0));
            EMIT(&p, RET(SECCOMP_RET_ALLOW)); /* CPU-time and other clocks: native */
            EMIT(&p, RET(to));
            continue;
        }
        if (!(row->trap & time_traps))
            continue;
#ifdef __NR_futex
        if (row->nr == __NR_futex) {
            /* Only the waits that have a timeout (arg 3 not NULL). A scaled or
             * frozen clock changes every one: FUTEX_WAIT, LOCK_PI, WAIT_BITSET,
             * WAIT_REQUEUE_PI, LOCK_PI2 (op & 0x7f, the PRIVATE and
             * CLOCK_REALTIME bits off). At rate 1 only a deadline on
             * CLOCK_REALTIME needs the init: LOCK_PI's always is, the others'
             * with FUTEX_CLOCK_REALTIME (0x100); a relative timeout is the
             * same in any clock, and the time namespace maps MONOTONIC ones. */
            static const uint32_t scaled_waits[] = {0, 6, 9, 11, 13};
            static const uint32_t realtime_waits[] = {6, 0x100 | 6, 0x100 | 9, 0x100 | 11, 0x100 | 13};
            const int scaled = (time_traps & VB_TRAP_TIMEOUTS) != 0;
            const uint32_t *waits = scaled ? scaled_waits : realtime_waits;
            _Static_assert(VB_ARRAY_LEN(scaled_waits) == VB_ARRAY_LEN(realtime_waits), "one program shape");
            const uint8_t n = VB_ARRAY_LEN(scaled_waits);
            EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)row->nr, 0, (uint8_t)(n + 9)));
            EMIT(&p, BPF_STMT(BPF_LD | BPF_W | BPF_ABS, VB_ARG_LO(1)));
            EMIT(&p, BPF_STMT(BPF_ALU | BPF_AND | BPF_K, scaled ? 0x7f : 0x17f));
            for (uint8_t k = 0; k < n; k++)
                EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, waits[k], (uint8_t)(n - k), 0));
            EMIT(&p, RET(SECCOMP_RET_ALLOW));
            EMIT(&p, BPF_STMT(BPF_LD | BPF_W | BPF_ABS, VB_ARG_LO(3)));
            EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 3));
            EMIT(&p, BPF_STMT(BPF_LD | BPF_W | BPF_ABS, VB_ARG_HI(3)));
            EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1));
            EMIT(&p, RET(SECCOMP_RET_ALLOW)); /* no timeout */
            EMIT(&p, RET(to));
            continue;
        }
#endif
        if (!(time_traps & VB_TRAP_TIMEOUTS) && (row->nr == __NR_clock_nanosleep || row->nr == __NR_timerfd_settime)) {
            /* at rate 1 a relative timeout needs nothing: only an absolute deadline
             * (TIMER_ABSTIME, TFD_TIMER_ABSTIME: 1 in arg 1) is on the sandbox's clock */
            EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)row->nr, 0, 4));
            EMIT(&p, BPF_STMT(BPF_LD | BPF_W | BPF_ABS, VB_ARG_LO(1)));
            EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 1, 0, 1));
            EMIT(&p, RET(to));
            EMIT(&p, RET(SECCOMP_RET_ALLOW));
            continue;
        }
        EMIT(&p, BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)row->nr, 0, 1));
        EMIT(&p, RET(to));
    }

    EMIT(&p, RET(SECCOMP_RET_ALLOW));
    return (int)p.len;
}

int vb_apply_seccomp(uint64_t deny_groups, uint64_t interpose_families, uint64_t time_traps)
{
    struct sock_filter insns[VB_SECCOMP_MAX_INSNS];
    int n = vb_seccomp_build(deny_groups, interpose_families, time_traps, insns, VB_ARRAY_LEN(insns));
    if (n < 0)
        vb_child_fail(-n, VB_EXIT_SETUP, "build the seccomp program", NULL);
    struct sock_fprog prog = {.len = (unsigned short)n, .filter = insns};
    unsigned flags = interpose_families ? SECCOMP_FILTER_FLAG_NEW_LISTENER : 0;
    long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
    if (rc < 0)
        vb_child_fail(errno, VB_EXIT_SETUP, "install the seccomp filter", NULL);
    return interpose_families ? (int)rc : -1;
}
