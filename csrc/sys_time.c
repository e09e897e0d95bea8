/* The time view: each sandbox's own clock, kept by the sandbox's init and read
 * out by the supervisor.
 *
 * The sandbox's clock is a line through the host's CLOCK_MONOTONIC:
 *
 *     elapsed  = rate * (host MONOTONIC - origin)      (frozen: what its sleeps and waits moved it)
 *     REALTIME = real_base + elapsed                   (tracking: host REALTIME + offset)
 *     MONOTONIC = BOOTTIME = mono_base + elapsed
 *
 * Who answers what:
 *  - a time namespace (made by the init for its children) carries the
 *    MONOTONIC/BOOTTIME offset, so with rate 1 and no freeze those clocks run
 *    natively and /proc/uptime starts at 1 s with them; /proc/stat is
 *    replaced by a copy whose btime is the sandbox's boot instant;
 *  - the init traces the command (PTRACE_SEIZE, following forks, clones and
 *    execs). At each exec it turns AT_SYSINFO_EHDR into AT_IGNORE in the new
 *    program's auxiliary vector, so glibc and Go find no vDSO and make real
 *    system calls for the time, and unmaps the vDSO and its data pages (a
 *    munmap it makes the program run), so nothing can read the host's clock
 *    there; arch_prctl(ARCH_MAP_VDSO_*) is refused;
 *  - the seccomp filter sends the clock reads (VB_TIME_CLOCK rows of
 *    syscall_table.h) to the supervisor by user notification: its
 *    sys_<name>(struct vb_call *) below writes the sandbox's time into the
 *    caller and answers the call, from the clock in a page the init shares
 *    (a notification wakes the supervisor on the caller's CPU, where a
 *    ptrace stop wakes the init and then the caller, each often on an idle
 *    CPU: 3-4 times the cost in a VM);
 *  - it sends the waits and time stamps (VB_TIME rows) to the init with
 *    SECCOMP_RET_TRACE; trace_<name>(struct vb_tracee *) rewrites a wait's
 *    timeout (scaled by the rate, an absolute virtual deadline made relative
 *    or the host's) in a copy below the caller's stack pointer, then lets the
 *    kernel wait natively (signals and restarts behave as always). Frozen, a
 *    timed wait is followed to its end (PTRACE_SYSCALL), which moves the
 *    clock by the time it took, or a sleep returns at once and moves it.
 *
 * SAFETY: every CONTINUE here runs a call the seccomp filter would otherwise
 * have allowed untouched; the tracer grants nothing and only changes
 * timeouts and time stamps of the caller's own calls, so layers 0-2 hold the
 * outcome (DESIGN.md rule 1). What the tracer reads from the caller (a
 * timespec) decides only how long the caller itself waits.
 *
 * Everything here but the clock reads runs in the init: no malloc, no stdio
 * (it is a copy of a multi-threaded caller), only system calls. The clock
 * reads run on the supervisor's thread; they read the clock, which the init
 * changes only when frozen (`jumped`, atomically). */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <linux/mount.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "supervise.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef PTRACE_EVENT_STOP
#define PTRACE_EVENT_STOP 128
#endif
#define NS 1000000000LL
#define USER_HZ 100 /* the unit of times() and of /proc's ticks on x86_64 */
#define AT_IGNORE_ 1
#define AT_SYSINFO_EHDR_ 33

static int64_t host_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

uint64_t vb_time_traps(const struct vb_plan *plan)
{
    if (!plan->time_view)
        return 0;
    uint64_t traps = VB_TRAP_CLOCK_REAL | VB_TRAP_DEADLINES | VB_TRAP_STAMPS;
    if (plan->time_rate != 1.0 || plan->time_frozen)
        traps |= VB_TRAP_CLOCK_MONO | VB_TRAP_TIMEOUTS;
    if (plan->time_strict)
        traps |= VB_TRAP_STRICT;
    if (plan->time_file_times)
        traps |= VB_TRAP_FILE_TIMES;
    return traps;
}

struct vb_clock *vb_clock_new(const struct vb_plan *plan)
{
    struct vb_clock *clock = mmap(NULL, sizeof *clock, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (clock == MAP_FAILED)
        return NULL;
    clock->origin_mono = host_ns(CLOCK_MONOTONIC);
    int64_t real = host_ns(CLOCK_REALTIME);
    clock->origin_real = real;
    clock->rate = plan->time_rate > 0 ? plan->time_rate : 1.0;
    clock->frozen = plan->time_frozen;
    clock->offset = plan->time_offset_ns;
    clock->real_base = plan->time_has_start ? plan->time_start_ns : real + plan->time_offset_ns;
    clock->track = !plan->time_has_start && clock->rate == 1.0 && !clock->frozen;
    clock->strict = plan->time_strict;
    clock->file_times = plan->time_file_times;
    /* a fresh machine, up for a second: the host's uptime is not the sandbox's to see */
    clock->mono_base = NS;
    cpu_set_t cpus;
    clock->spin = sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) > 1;
    return clock; /* mmap zeroed the rest */
}

/* Frozen: how far the sandbox's sleeps moved its clock. The init moves it (the
 * only writer); the supervisor reads it for clock reads, from another process. */
static int64_t jumped(const struct vb_clock *clock)
{
    return __atomic_load_n(&clock->jumped, __ATOMIC_RELAXED);
}

static int64_t elapsed(const struct vb_clock *clock)
{
    if (clock->frozen)
        return jumped(clock);
    int64_t real = host_ns(CLOCK_MONOTONIC) - clock->origin_mono;
    return clock->rate == 1.0 ? real : (int64_t)((double)real * clock->rate);
}

/* 1 for the clocks the view virtualizes (CPU-time clocks are not). */
static int is_real_clock(int64_t id)
{
    return id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE || id == CLOCK_REALTIME_ALARM || id == CLOCK_TAI;
}

static int is_mono_clock(int64_t id)
{
    return id == CLOCK_MONOTONIC || id == CLOCK_MONOTONIC_RAW || id == CLOCK_MONOTONIC_COARSE ||
           id == CLOCK_BOOTTIME || id == CLOCK_BOOTTIME_ALARM;
}

/* The sandbox's reading of clock `id` (one it virtualizes), ns. */
static int64_t clock_read(const struct vb_clock *clock, int64_t id)
{
    if (is_mono_clock(id))
        return clock->mono_base + elapsed(clock);
    int64_t real = clock->track ? host_ns(CLOCK_REALTIME) + clock->offset : clock->real_base + elapsed(clock);
    if (id == CLOCK_TAI)
        real += host_ns(CLOCK_TAI) - host_ns(CLOCK_REALTIME);
    return real;
}

/* --- in the init, before the command ------------------------------------------ */

/* Decimal digits of `v` into `out` (cap >= 24). */
static void format_int(int64_t v, char *out)
{
    char digits[24];
    int len = 0, at = 0;
    uint64_t u = v < 0 ? (uint64_t)(-v) : (uint64_t)v;
    do
        digits[len++] = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0)
        out[at++] = '-';
    while (len)
        out[at++] = digits[--len];
    out[at] = '\0';
}


void vb_time_namespace(const struct vb_clock *clock)
{
    if (unshare(CLONE_NEWTIME) != 0)
        vb_child_fail(errno, VB_EXIT_SETUP, "time view: create a time namespace (unshare CLONE_NEWTIME)", NULL);
    /* offset = mono_base - origin, as "<secs> <nanosecs>" with 0 <= nanosecs < 1e9 */
    int64_t lines[2] = {clock->mono_base - clock->origin_mono, 0};
    int64_t boot = host_ns(CLOCK_BOOTTIME) - (host_ns(CLOCK_MONOTONIC) - clock->origin_mono);
    lines[1] = clock->mono_base - boot;
    static const char *const names[2] = {"monotonic ", "boottime "};
    char text[128];
    text[0] = '\0';
    for (int i = 0; i < 2; i++) {
        int64_t secs = lines[i] / NS, nsecs = lines[i] % NS;
        if (nsecs < 0) {
            secs--;
            nsecs += NS;
        }
        char num[2][24];
        format_int(secs, num[0]);
        format_int(nsecs, num[1]);
        vb_strlcat(text, names[i], sizeof text);
        vb_strlcat(text, num[0], sizeof text);
        vb_strlcat(text, " ", sizeof text);
        vb_strlcat(text, num[1], sizeof text);
        vb_strlcat(text, "\n", sizeof text);
    }
    int fd = open("/proc/self/timens_offsets", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        vb_child_fail(errno, VB_EXIT_SETUP, "time view: write /proc/self/timens_offsets", NULL);
    close(fd);
}

/* /proc/stat's btime is the host's boot instant, made so that btime plus
 * the (namespaced) uptime is the host's realtime: a way around the view. It
 * is replaced by a copy whose btime is the sandbox's boot instant (its
 * start minus mono_base); the copy is a snapshot, so its CPU counters stay
 * as they were at the start. Those counters add up to the host's uptime
 * times its CPUs: strict, they are zeros. A read-only file on a private
 * tmpfs, mounted over /proc/stat; skipped when the view has no /proc. */
void vb_time_proc_stat(struct vb_clock *clock)
{
    /* /proc/PID of a tracee names it only in a procfs of the sandbox's pid
     * namespace, where this init is 1 (without [fs].proc, /proc may be the host's) */
    char self[8];
    ssize_t len_self = readlink("/proc/self", self, sizeof self);
    clock->own_proc = len_self == 1 && self[0] == '1';
    static char text[1 << 16], out[(1 << 16) + 64];
    int f = open("/proc/stat", O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return;
    size_t len = 0;
    ssize_t n;
    while (len < sizeof text - 1 && (n = read(f, text + len, sizeof text - 1 - len)) > 0)
        len += (size_t)n;
    close(f);
    text[len] = '\0';
    size_t o = 0;
    for (char *line = text; *line;) {
        char *end = strchr(line, '\n');
        size_t l = end ? (size_t)(end - line) + 1 : strlen(line);
        if (strncmp(line, "btime ", 6) == 0) {
            char num[24];
            format_int((clock->real_base - clock->mono_base) / NS, num);
            memcpy(out + o, "btime ", 6);
            o += 6;
            memcpy(out + o, num, strlen(num));
            o += strlen(num);
            out[o++] = '\n';
        } else if (clock->strict && strncmp(line, "cpu", 3) == 0) {
            /* "cpuN" and its ten counters in ticks */
            size_t name = 3;
            while (line[name] >= '0' && line[name] <= '9')
                name++;
            memcpy(out + o, line, name);
            o += name;
            memcpy(out + o, " 0 0 0 0 0 0 0 0 0 0\n", 21);
            o += 21;
        } else {
            memcpy(out + o, line, l);
            o += l;
        }
        line += l;
    }
    int fs = (int)syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC);
    if (fs < 0 || syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "size", "128k", 0) != 0 ||
        syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) != 0)
        vb_child_fail(errno, VB_EXIT_SETUP, "time view: a tmpfs for /proc/stat", NULL);
    int mnt = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
    close(fs);
    int file = mnt >= 0 ? openat(mnt, "stat", O_CREAT | O_WRONLY | O_CLOEXEC, 0444) : -1;
    struct timespec start[2] = {{(time_t)(clock->real_base / NS), 0}, {(time_t)(clock->real_base / NS), 0}};
    if (file < 0 || write(file, out, o) != (ssize_t)o || futimens(file, start) != 0)
        vb_child_fail(errno, VB_EXIT_SETUP, "time view: write the sandbox's /proc/stat", NULL);
    close(file);
    int tree = (int)syscall(SYS_open_tree, mnt, "stat", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY};
    if (tree < 0 || syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &ro, sizeof ro) != 0 ||
        syscall(SYS_move_mount, tree, "", AT_FDCWD, "/proc/stat", MOVE_MOUNT_F_EMPTY_PATH) != 0)
        vb_child_fail(errno, VB_EXIT_SETUP, "time view: mount the sandbox's /proc/stat", NULL);
    close(tree);
    close(mnt);
}

void vb_time_trace(pid_t command, int go_w)
{
    long options = PTRACE_O_EXITKILL | PTRACE_O_TRACESECCOMP | PTRACE_O_TRACEEXEC | PTRACE_O_TRACEFORK |
                   PTRACE_O_TRACEVFORK | PTRACE_O_TRACECLONE | PTRACE_O_TRACESYSGOOD;
    if (ptrace(PTRACE_SEIZE, command, 0, options) != 0) {
        int err = errno;
        kill(command, SIGKILL);
        vb_child_fail(err, VB_EXIT_SETUP, "time view: trace the command (ptrace; kernel.yama.ptrace_scope 3 forbids it)",
                      NULL);
    }
    ssize_t n = write(go_w, "g", 1);
    (void)n;
    close(go_w);
}

#if defined(__x86_64__) /* vb_spawn refuses a time view elsewhere */

/* --- tracee memory: PTRACE_PEEKDATA/POKEDATA, word by word (lengths are multiples of 8) */

struct vb_tracee {
    pid_t pid;
    struct user_regs_struct regs;
    struct vb_clock *clock;
    int changed;               /* regs to write back before it resumes */
    int64_t wait_cap;          /* frozen: a wait of up to this long (virtual ns) moves the clock */
    int fix;                   /* FIX_*: a remaining time the kernel writes at `fix_at`, in real time */
    uint64_t fix_at;
};

/* What the tracer rewrites at a call's end: remaining times the kernel
 * reports in real time (when the rate is not 1), times()'s ticks (strict),
 * a stat's file times (file_times). */
enum { FIX_NONE, FIX_REM, FIX_ITIMERSPEC, FIX_ITIMERVAL, FIX_TICKS, FIX_STAT, FIX_STATX };

/* Asks for the call's end: the kernel's `kind` of remaining time at `at` is scaled there. */
static void fix_at_end(struct vb_tracee *t, int kind, uint64_t at)
{
    if (at && t->clock->rate != 1.0 && !t->clock->frozen) {
        t->fix = kind;
        t->fix_at = at;
    }
}

static int tracee_read(const struct vb_tracee *t, uint64_t addr, void *out, size_t len)
{
    for (size_t at = 0; at < len; at += 8) {
        errno = 0;
        long word = ptrace(PTRACE_PEEKDATA, t->pid, (void *)(uintptr_t)(addr + at), 0);
        if (errno)
            return -EFAULT;
        memcpy((char *)out + at, &word, 8);
    }
    return 0;
}

/* Word by word through ptrace, as a debugger writes: read-only private
 * pages too (the exec-time code patch needs that). */
static int tracee_poke(const struct vb_tracee *t, uint64_t addr, const void *data, size_t len)
{
    for (size_t at = 0; at < len; at += 8) {
        long word;
        memcpy(&word, (const char *)data + at, 8);
        if (ptrace(PTRACE_POKEDATA, t->pid, (void *)(uintptr_t)(addr + at), (void *)word) != 0)
            return -EFAULT;
    }
    return 0;
}

/* As the kernel would write a call's result: one call, and the caller's own
 * page protections hold (EFAULT for a read-only page). */
static int tracee_write(const struct vb_tracee *t, uint64_t addr, const void *data, size_t len)
{
    struct iovec local = {(void *)data, len}, remote = {(void *)(uintptr_t)addr, len};
    ssize_t n = process_vm_writev(t->pid, &local, 1, &remote, 1, 0);
    if (n == (ssize_t)len)
        return 0;
    if (n >= 0 || errno == EFAULT)
        return -EFAULT;
    return tracee_poke(t, addr, data, len); /* not allowed to (an unusual set-up) */
}

/* A copy of a rewritten argument goes below the caller's stack pointer,
 * past the 128-byte red zone the ABI lets leaf code use: memory the caller
 * does not hold anything in during a system call. At most 64 bytes. */
static uint64_t scratch(struct vb_tracee *t)
{
    return (t->regs.rsp - 128 - 64) & ~(uint64_t)15;
}

/* Writes `data` to the scratch area and returns its address (0 on failure). */
static uint64_t put_scratch(struct vb_tracee *t, const void *data, size_t len)
{
    uint64_t at = scratch(t);
    return tracee_write(t, at, data, len) == 0 ? at : 0;
}

/* Reads a call's argument at `addr`: 0, or -1 when unreadable (the kernel will
 * say EFAULT) or when it is the tracer's own copy: a call the kernel restarts
 * (ERESTARTNOHAND after a stop) comes back with the rewritten argument, which
 * must not be rewritten twice. */
static int read_arg(struct vb_tracee *t, uint64_t addr, void *out, size_t len)
{
    if (addr == scratch(t))
        return -1;
    return tracee_read(t, addr, out, len);
}

static struct vb_decision decide(enum vb_decision_kind kind, int64_t value)
{
    struct vb_decision d = {kind, value, NULL};
    return d;
}

#define RETURN(v) decide(VB_DECIDE_RETURN, (v))
#define CONTINUE decide(VB_DECIDE_CONTINUE, 0)
#define FAIL(errno_) decide(VB_DECIDE_ERRNO, (errno_)) /* the supervisor's handlers: the caller gets -errno_ */

static int64_t ts_ns(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * NS + ts->tv_nsec;
}

static struct timespec ns_ts(int64_t ns)
{
    if (ns < 0)
        ns = 0;
    struct timespec ts = {(time_t)(ns / NS), (long)(ns % NS)};
    return ts;
}

static int valid_ts(const struct timespec *ts)
{
    return ts->tv_sec >= 0 && ts->tv_nsec >= 0 && ts->tv_nsec < NS;
}

/* A real wait for `virtual_ns` of the sandbox's time. */
static int64_t scale(const struct vb_clock *clock, int64_t virtual_ns)
{
    if (clock->rate == 1.0 || clock->frozen || virtual_ns <= 0)
        return virtual_ns;
    double real = (double)virtual_ns / clock->rate;
    return real > 9.2e18 ? INT64_MAX : (int64_t)real;
}

/* Frozen, a wait with a timeout is real, and moves the clock by the time it
 * took, up to the timeout (an event loop waits for its next timer that way:
 * the clock must reach it). The tracer sees the call's end for that. */
static struct vb_decision wait_up_to(struct vb_tracee *t, int64_t virtual_ns)
{
    if (virtual_ns > 0)
        t->wait_cap = virtual_ns;
    return CONTINUE;
}

/* Rewrites the relative timespec at `*arg` (NULL: none) to its real duration. */
static struct vb_decision scale_timespec_arg(struct vb_tracee *t, unsigned long long *arg)
{
    struct timespec ts;
    if (!*arg || (t->clock->rate == 1.0 && !t->clock->frozen) || read_arg(t, *arg, &ts, sizeof ts) != 0 ||
        !valid_ts(&ts))
        return CONTINUE; /* the kernel reports the fault or EINVAL itself */
    if (t->clock->frozen)
        return wait_up_to(t, ts_ns(&ts));
    struct timespec real = ns_ts(scale(t->clock, ts_ns(&ts)));
    uint64_t copy = put_scratch(t, &real, sizeof real);
    if (copy) {
        *arg = copy;
        t->changed = 1;
    }
    return CONTINUE;
}

/* Rewrites the int millisecond timeout in `*arg` (< 0: forever). */
static struct vb_decision scale_ms_arg(struct vb_tracee *t, unsigned long long *arg)
{
    int ms = (int)*arg;
    if (ms > 0 && t->clock->frozen)
        return wait_up_to(t, (int64_t)ms * 1000000);
    if (ms > 0 && t->clock->rate != 1.0) {
        int64_t real = (scale(t->clock, (int64_t)ms * 1000000) + 999999) / 1000000;
        *arg = (unsigned long long)(real > INT32_MAX ? INT32_MAX : (real < 1 ? 1 : real));
        t->changed = 1;
    }
    return CONTINUE;
}

/* --- the clock reads, answered by the supervisor (VB_TIME_CLOCK rows) ---------------- */

/* clock_gettime(id, tp): the sandbox's time for the clocks it virtualizes */
struct vb_decision sys_clock_gettime(struct vb_call *call)
{
    int64_t id = (int32_t)call->notif.data.args[0];
    if (!is_real_clock(id) && !is_mono_clock(id))
        return CONTINUE; /* the filter sends only the view's clocks: cannot happen */
    struct timespec ts = ns_ts(clock_read(vb_call_clock(call), id));
    return vb_write_memory(call, call->notif.data.args[1], &ts, sizeof ts) == 0 ? RETURN(0) : FAIL(EFAULT);
}

/* gettimeofday(tv, tz): the sandbox's CLOCK_REALTIME; the host's (UTC) zone */
struct vb_decision sys_gettimeofday(struct vb_call *call)
{
    uint64_t tv_at = call->notif.data.args[0], tz_at = call->notif.data.args[1];
    if (tv_at) {
        int64_t now = clock_read(vb_call_clock(call), CLOCK_REALTIME);
        struct timeval tv = {(time_t)(now / NS), (suseconds_t)(now % NS / 1000)};
        if (vb_write_memory(call, tv_at, &tv, sizeof tv) != 0)
            return FAIL(EFAULT);
    }
    if (tz_at) {
        struct timezone tz = {0, 0};
        if (vb_write_memory(call, tz_at, &tz, sizeof tz) != 0)
            return FAIL(EFAULT);
    }
    return RETURN(0);
}

/* time(tloc): the sandbox's CLOCK_REALTIME in seconds */
struct vb_decision sys_time(struct vb_call *call)
{
    int64_t secs = clock_read(vb_call_clock(call), CLOCK_REALTIME) / NS;
    uint64_t at = call->notif.data.args[0];
    if (at && vb_write_memory(call, at, &secs, sizeof secs) != 0)
        return FAIL(EFAULT);
    return RETURN(secs);
}

/* A struct timex at `at` in the caller, for a read (modes 0, or
 * ADJ_OFFSET_SS_READ: adjtime's query of what is left to slew): the kernel's
 * NTP state as the host has it, the time the sandbox's. Every other mode sets
 * the host's clock: EPERM, as for any caller without the host's CAP_SYS_TIME. */
static struct vb_decision answer_timex(struct vb_call *call, uint64_t at)
{
    struct timex tx;
    int rc = vb_read_memory(call, at, &tx, sizeof tx);
    if (!vb_call_valid(call))
        return FAIL(ESRCH); /* what was read may be another process's: no answer from it */
    if (rc != 0)
        return FAIL(EFAULT);
    if (tx.modes != 0 && tx.modes != ADJ_OFFSET_SS_READ)
        return FAIL(EPERM);
    struct timex host = {.modes = tx.modes};
    int state = adjtimex(&host);
    if (state < 0)
        return FAIL(errno);
    int64_t now = clock_read(vb_call_clock(call), CLOCK_REALTIME);
    host.time.tv_sec = (time_t)(now / NS);
    host.time.tv_usec = (suseconds_t)((host.status & STA_NANO) ? now % NS : now % NS / 1000);
    return vb_write_memory(call, at, &host, sizeof host) == 0 ? RETURN(state) : FAIL(EFAULT);
}

/* adjtimex(buf) */
struct vb_decision sys_adjtimex(struct vb_call *call)
{
    return answer_timex(call, call->notif.data.args[0]);
}

/* clock_adjtime(id, buf): CLOCK_REALTIME as adjtimex; the other clocks the
 * view owns cannot be adjusted (as natively); others are not clocks here */
struct vb_decision sys_clock_adjtime(struct vb_call *call)
{
    int64_t id = (int32_t)call->notif.data.args[0];
    if (id == CLOCK_REALTIME)
        return answer_timex(call, call->notif.data.args[1]);
    return FAIL(is_real_clock(id) || is_mono_clock(id) ? EOPNOTSUPP : EINVAL);
}

/* --- the handlers of the init, one per VB_TIME row ----------------------------------- */

/* A sleep of `virtual_ns`: frozen, the clock jumps by it and the call returns
 * at once; otherwise the kernel sleeps the real duration (a relative copy). */
static struct vb_decision sleep_for(struct vb_tracee *t, int64_t virtual_ns, unsigned long long *ts_arg)
{
    if (t->clock->frozen) {
        if (virtual_ns > 0)
            __atomic_store_n(&t->clock->jumped, jumped(t->clock) + virtual_ns, __ATOMIC_RELAXED);
        return RETURN(0);
    }
    struct timespec real = ns_ts(scale(t->clock, virtual_ns));
    uint64_t copy = put_scratch(t, &real, sizeof real);
    if (!copy)
        return CONTINUE;
    *ts_arg = copy;
    t->changed = 1;
    return CONTINUE;
}

/* nanosleep(req, rem) */
struct vb_decision trace_nanosleep(struct vb_tracee *t)
{
    struct timespec req;
    if (read_arg(t, t->regs.rdi, &req, sizeof req) != 0 || !valid_ts(&req))
        return CONTINUE; /* EFAULT or EINVAL from the kernel */
    fix_at_end(t, FIX_REM, t->regs.rsi);
    return sleep_for(t, ts_ns(&req), &t->regs.rdi);
}

/* clock_nanosleep(id, flags, req, rem): an absolute deadline on the sandbox's
 * clock becomes the relative sleep it means */
struct vb_decision trace_clock_nanosleep(struct vb_tracee *t)
{
    int64_t id = (int32_t)t->regs.rdi;
    struct timespec req;
    if ((!is_real_clock(id) && !is_mono_clock(id)) || read_arg(t, t->regs.rdx, &req, sizeof req) != 0 ||
        !valid_ts(&req))
        return CONTINUE;
    int64_t wait = ts_ns(&req);
    if (t->regs.rsi & TIMER_ABSTIME) {
        wait -= clock_read(t->clock, id);
        t->regs.rsi &= ~(unsigned long long)TIMER_ABSTIME;
        t->changed = 1;
    } else if (t->clock->rate == 1.0 && !t->clock->frozen) {
        return CONTINUE;
    } else {
        fix_at_end(t, FIX_REM, t->regs.r10); /* only a relative sleep reports what is left */
    }
    return sleep_for(t, wait, &t->regs.rdx);
}

/* The clock of timerfd `fd` of the caller, from /proc/PID/fdinfo (MONOTONIC if unreadable). */
static int64_t timerfd_clock(const struct vb_tracee *t, int fd)
{
    if (!t->clock->own_proc)
        return CLOCK_MONOTONIC;
    char path[64] = "/proc/", num[2][16];
    int v[2] = {t->pid, fd};
    for (int k = 0; k < 2; k++) {
        char digits[16];
        int len = 0;
        unsigned u = (unsigned)v[k];
        do
            digits[len++] = (char)('0' + u % 10);
        while ((u /= 10) != 0);
        int at = 0;
        while (len)
            num[k][at++] = digits[--len];
        num[k][at] = '\0';
    }
    vb_strlcat(path, num[0], sizeof path);
    vb_strlcat(path, "/fdinfo/", sizeof path);
    vb_strlcat(path, num[1], sizeof path);
    char text[512];
    int f = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = f >= 0 ? read(f, text, sizeof text - 1) : -1;
    if (f >= 0)
        close(f);
    if (n <= 0)
        return CLOCK_MONOTONIC;
    text[n] = '\0';
    const char *p = strstr(text, "clockid:");
    if (!p)
        return CLOCK_MONOTONIC;
    p += 8;
    while (*p == ' ' || *p == '\t')
        p++;
    int64_t id = 0;
    while (*p >= '0' && *p <= '9')
        id = id * 10 + (*p++ - '0');
    return id;
}

#ifndef TFD_TIMER_ABSTIME
#define TFD_TIMER_ABSTIME 1
#endif
#define TFD_TIMER_CANCEL_ON_SET_ 2

/* timerfd_settime(fd, flags, new, old): a deadline on the sandbox's clock
 * becomes relative; both times are scaled by the rate */
struct vb_decision trace_timerfd_settime(struct vb_tracee *t)
{
    struct itimerspec its;
    if (read_arg(t, t->regs.rdx, &its, sizeof its) != 0 || !valid_ts(&its.it_value) ||
        !valid_ts(&its.it_interval))
        return CONTINUE;
    fix_at_end(t, FIX_ITIMERSPEC, t->regs.r10);
    int armed = its.it_value.tv_sec || its.it_value.tv_nsec;
    int absolute = (t->regs.rsi & TFD_TIMER_ABSTIME) != 0;
    if (!armed || (!absolute && t->clock->rate == 1.0))
        return CONTINUE;
    int64_t value = ts_ns(&its.it_value);
    if (absolute) {
        int64_t id = timerfd_clock(t, (int)t->regs.rdi);
        if (!is_real_clock(id) && !is_mono_clock(id))
            return CONTINUE;
        value -= clock_read(t->clock, id);
        if (value <= 0)
            value = 1; /* already passed: fires at once (0 would disarm it) */
        t->regs.rsi &= ~(unsigned long long)(TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET_);
    }
    struct itimerspec real;
    real.it_value = ns_ts(scale(t->clock, value));
    if (!real.it_value.tv_sec && !real.it_value.tv_nsec)
        real.it_value.tv_nsec = 1;
    real.it_interval = ns_ts(scale(t->clock, ts_ns(&its.it_interval)));
    uint64_t copy = put_scratch(t, &real, sizeof real);
    if (copy) {
        t->regs.rdx = copy;
        t->changed = 1;
    }
    return CONTINUE;
}

#define FUTEX_CMD(op) ((op) & 0x7f)
#define FUTEX_CLOCK_REALTIME_ 256

/* futex(uaddr, op, val, timeout, ...): FUTEX_WAIT's relative timeout is
 * scaled; the absolute deadlines of the other waits, on the sandbox's
 * REALTIME or MONOTONIC, become the host's deadline meaning the same wait */
struct vb_decision trace_futex(struct vb_tracee *t)
{
    int cmd = FUTEX_CMD((int)t->regs.rsi);
    if (cmd == 0) /* FUTEX_WAIT */
        return scale_timespec_arg(t, &t->regs.r10);
    struct timespec deadline;
    if (read_arg(t, t->regs.r10, &deadline, sizeof deadline) != 0 || !valid_ts(&deadline))
        return CONTINUE;
    int realtime = cmd == 6 /* LOCK_PI */ || (t->regs.rsi & FUTEX_CLOCK_REALTIME_);
    if (!realtime && t->clock->rate == 1.0 && !t->clock->frozen)
        return CONTINUE; /* the time namespace already maps MONOTONIC deadlines */
    int64_t left = ts_ns(&deadline) - clock_read(t->clock, realtime ? CLOCK_REALTIME : CLOCK_MONOTONIC);
    int64_t wait = left > 0 ? scale(t->clock, left) : 0;
    if (t->clock->frozen)
        wait_up_to(t, wait);
    /* the kernel reads a MONOTONIC deadline in the caller's time namespace */
    int64_t now = realtime ? host_ns(CLOCK_REALTIME)
                           : host_ns(CLOCK_MONOTONIC) + t->clock->mono_base - t->clock->origin_mono;
    struct timespec host = ns_ts(now + wait);
    uint64_t copy = put_scratch(t, &host, sizeof host);
    if (copy) {
        t->regs.r10 = copy;
        t->changed = 1;
    }
    return CONTINUE;
}

/* select(n, r, w, e, timeval *timeout) */
struct vb_decision trace_select(struct vb_tracee *t)
{
    struct timeval tv;
    if (!t->regs.r8 || (t->clock->rate == 1.0 && !t->clock->frozen) ||
        read_arg(t, t->regs.r8, &tv, sizeof tv) != 0 || tv.tv_sec < 0 || tv.tv_usec < 0 || tv.tv_usec >= 1000000)
        return CONTINUE;
    if (t->clock->frozen)
        return wait_up_to(t, (int64_t)tv.tv_sec * NS + (int64_t)tv.tv_usec * 1000);
    int64_t real = scale(t->clock, (int64_t)tv.tv_sec * NS + (int64_t)tv.tv_usec * 1000);
    struct timeval copy = {(time_t)(real / NS), (suseconds_t)(real % NS / 1000)};
    uint64_t at = put_scratch(t, &copy, sizeof copy);
    if (at) {
        t->regs.r8 = at;
        t->changed = 1;
    }
    return CONTINUE;
}

/* pselect6(n, r, w, e, timespec *timeout, sigmask) */
struct vb_decision trace_pselect6(struct vb_tracee *t)
{
    return scale_timespec_arg(t, &t->regs.r8);
}

/* poll(fds, n, int ms) */
struct vb_decision trace_poll(struct vb_tracee *t)
{
    return scale_ms_arg(t, &t->regs.rdx);
}

/* ppoll(fds, n, timespec *timeout, sigmask, size) */
struct vb_decision trace_ppoll(struct vb_tracee *t)
{
    return scale_timespec_arg(t, &t->regs.rdx);
}

/* epoll_wait(epfd, events, max, int ms) */
struct vb_decision trace_epoll_wait(struct vb_tracee *t)
{
    return scale_ms_arg(t, &t->regs.r10);
}

/* epoll_pwait(epfd, events, max, int ms, sigmask, size) */
struct vb_decision trace_epoll_pwait(struct vb_tracee *t)
{
    return scale_ms_arg(t, &t->regs.r10);
}

/* epoll_pwait2(epfd, events, max, timespec *timeout, sigmask, size) */
struct vb_decision trace_epoll_pwait2(struct vb_tracee *t)
{
    return scale_timespec_arg(t, &t->regs.r10);
}

/* alarm(secs): becomes setitimer(ITIMER_REAL) for the real duration (it then returns 0) */
struct vb_decision trace_alarm(struct vb_tracee *t)
{
    unsigned secs = (unsigned)t->regs.rdi;
    if (!secs || t->clock->rate == 1.0 || t->clock->frozen)
        return CONTINUE;
    int64_t real = scale(t->clock, (int64_t)secs * NS);
    struct itimerval it = {{0, 0}, {(time_t)(real / NS), (suseconds_t)(real % NS / 1000)}};
    if (!it.it_value.tv_sec && !it.it_value.tv_usec)
        it.it_value.tv_usec = 1;
    uint64_t at = put_scratch(t, &it, sizeof it);
    if (!at)
        return CONTINUE;
    t->regs.orig_rax = __NR_setitimer;
    t->regs.rdi = ITIMER_REAL;
    t->regs.rsi = at;
    t->regs.rdx = 0;
    t->changed = 1;
    return CONTINUE;
}

/* timerfd_gettime(fd, curr): what is left, in the sandbox's time */
struct vb_decision trace_timerfd_gettime(struct vb_tracee *t)
{
    fix_at_end(t, FIX_ITIMERSPEC, t->regs.rsi);
    return CONTINUE;
}

/* getitimer(which, curr): ITIMER_REAL's remaining time, in the sandbox's time */
struct vb_decision trace_getitimer(struct vb_tracee *t)
{
    if (t->regs.rdi == ITIMER_REAL)
        fix_at_end(t, FIX_ITIMERVAL, t->regs.rsi);
    return CONTINUE;
}

/* setitimer(which, new, old): ITIMER_REAL counts the sandbox's time */
struct vb_decision trace_setitimer(struct vb_tracee *t)
{
    struct itimerval it;
    if (t->regs.rdi == ITIMER_REAL)
        fix_at_end(t, FIX_ITIMERVAL, t->regs.rdx);
    if (t->regs.rdi != ITIMER_REAL || !t->regs.rsi || t->clock->rate == 1.0 || t->clock->frozen ||
        read_arg(t, t->regs.rsi, &it, sizeof it) != 0)
        return CONTINUE;
    struct timeval *parts[2] = {&it.it_interval, &it.it_value};
    for (int i = 0; i < 2; i++) {
        if (parts[i]->tv_sec < 0 || parts[i]->tv_usec < 0 || parts[i]->tv_usec >= 1000000)
            return CONTINUE;
        int armed = parts[i]->tv_sec || parts[i]->tv_usec;
        int64_t real = scale(t->clock, (int64_t)parts[i]->tv_sec * NS + (int64_t)parts[i]->tv_usec * 1000);
        parts[i]->tv_sec = (time_t)(real / NS);
        parts[i]->tv_usec = (suseconds_t)(real % NS / 1000);
        if (armed && !parts[i]->tv_sec && !parts[i]->tv_usec)
            parts[i]->tv_usec = 1;
    }
    uint64_t at = put_scratch(t, &it, sizeof it);
    if (at) {
        t->regs.rsi = at;
        t->changed = 1;
    }
    return CONTINUE;
}

#ifndef UTIME_NOW
#define UTIME_NOW ((1l << 30) - 1l)
#define UTIME_OMIT ((1l << 30) - 2l)
#endif

/* --- file times on the sandbox's clock ([time].file_times = "sandbox") ------------- */

/* A time the kernel stamped on a file (the host's CLOCK_REALTIME, ns) as the
 * sandbox's clock read it then. Times before the sandbox's start shift by
 * the offset at its start; later ones follow its line. At rate 1, not
 * frozen, that is one shift and the map is exact both ways; at another rate
 * the later times are scaled (rounded to the ns); frozen, they run at the
 * host's pace from the start (a frozen clock's line says nothing about when
 * the kernel stamped). */
static int64_t file_time_to_sandbox(const struct vb_clock *clock, int64_t host)
{
    if (clock->track)
        return host + clock->offset;
    int64_t since = host - clock->origin_real;
    if (since <= 0 || clock->rate == 1.0 || clock->frozen)
        return clock->real_base + since;
    return clock->real_base + (int64_t)((double)since * clock->rate);
}

/* The inverse: a time the sandbox gives, as the host's. */
static int64_t file_time_to_host(const struct vb_clock *clock, int64_t sandbox)
{
    if (clock->track)
        return sandbox - clock->offset;
    int64_t since = sandbox - clock->real_base;
    if (since <= 0 || clock->rate == 1.0 || clock->frozen)
        return clock->origin_real + since;
    return clock->origin_real + (int64_t)((double)since / clock->rate);
}

/* Seconds beyond which ns no longer fit an int64_t with room for an offset:
 * such times (the year 2255 and after, or as far before 1970) stay as they are. */
#define FILE_TIME_MAX_SECS 7000000000LL

/* *secs and *nsecs (0 <= nsecs < 1e9), mapped one way or the other. */
static void map_file_time(const struct vb_clock *clock, int to_host, int64_t *secs, int64_t *nsecs)
{
    if (*secs > FILE_TIME_MAX_SECS || *secs < -FILE_TIME_MAX_SECS)
        return;
    int64_t ns = *secs * NS + *nsecs;
    ns = to_host ? file_time_to_host(clock, ns) : file_time_to_sandbox(clock, ns);
    *secs = ns / NS;
    *nsecs = ns % NS;
    if (*nsecs < 0) { /* floor: times before 1970 keep 0 <= nsecs */
        *secs -= 1;
        *nsecs += NS;
    }
}

void vb_time_stat(const struct vb_clock *clock, struct stat *st)
{
    if (!clock || !clock->file_times)
        return;
    struct timespec *times[3] = {&st->st_atim, &st->st_mtim, &st->st_ctim};
    for (int i = 0; i < 3; i++) {
        int64_t secs = times[i]->tv_sec, nsecs = times[i]->tv_nsec;
        map_file_time(clock, 0, &secs, &nsecs);
        times[i]->tv_sec = (time_t)secs;
        times[i]->tv_nsec = (long)nsecs;
    }
}

void vb_time_statx(const struct vb_clock *clock, struct statx *stx)
{
    if (!clock || !clock->file_times)
        return;
    struct statx_timestamp *times[4] = {&stx->stx_atime, &stx->stx_btime, &stx->stx_ctime, &stx->stx_mtime};
    const unsigned masks[4] = {STATX_ATIME, STATX_BTIME, STATX_CTIME, STATX_MTIME};
    for (int i = 0; i < 4; i++) {
        if (!(stx->stx_mask & masks[i]))
            continue;
        int64_t secs = times[i]->tv_sec, nsecs = times[i]->tv_nsec;
        map_file_time(clock, 0, &secs, &nsecs);
        times[i]->tv_sec = secs;
        times[i]->tv_nsec = (uint32_t)nsecs;
    }
}

/* The stat family: the times the kernel writes into the caller's buffer at
 * `at` become the sandbox's, at the call's end (fix_file_times). */
static struct vb_decision file_times_at_end(struct vb_tracee *t, int kind, uint64_t at)
{
    if (t->clock->file_times && at) {
        t->fix = kind;
        t->fix_at = at;
    }
    return CONTINUE;
}

/* stat(path, buf) */
struct vb_decision trace_stat(struct vb_tracee *t)
{
    return file_times_at_end(t, FIX_STAT, t->regs.rsi);
}

/* lstat(path, buf) */
struct vb_decision trace_lstat(struct vb_tracee *t)
{
    return file_times_at_end(t, FIX_STAT, t->regs.rsi);
}

/* fstat(fd, buf) */
struct vb_decision trace_fstat(struct vb_tracee *t)
{
    return file_times_at_end(t, FIX_STAT, t->regs.rsi);
}

/* newfstatat(dirfd, path, buf, flags): also glibc's fstat */
struct vb_decision trace_newfstatat(struct vb_tracee *t)
{
    return file_times_at_end(t, FIX_STAT, t->regs.rdx);
}

/* statx(dirfd, path, flags, mask, buf) */
struct vb_decision trace_statx(struct vb_tracee *t)
{
    return file_times_at_end(t, FIX_STATX, t->regs.r8);
}

/* After a stat call succeeded: its times at `at`, made the sandbox's. */
static void fix_file_times(struct vb_tracee *t, int kind, uint64_t at)
{
    if (kind == FIX_STAT) {
        struct stat st;
        if (tracee_read(t, at, &st, sizeof st) != 0)
            return;
        vb_time_stat(t->clock, &st);
        tracee_write(t, at, &st, sizeof st);
    } else {
        struct statx stx;
        if (tracee_read(t, at, &stx, sizeof stx) != 0)
            return;
        vb_time_statx(t->clock, &stx);
        tracee_write(t, at, &stx, sizeof stx);
    }
}

/* How a setter gives its two times. */
enum { TIMESPEC, TIMEVAL, UTIMBUF };

/* Explicit times the sandbox sets, on its clock, in a copy made the host's
 * (`*arg`: where the caller's are; NULL and "now", UTIME_NOW, are left to
 * the kernel: it stamps the host's now, which reads back as the sandbox's).
 * Invalid times are left for the kernel to refuse. */
static struct vb_decision set_file_times(struct vb_tracee *t, unsigned long long *arg, int how)
{
    union {
        struct timespec ts[2];
        struct timeval tv[2];
        int64_t secs[2];
    } times;
    size_t len = how == TIMESPEC ? sizeof times.ts : how == TIMEVAL ? sizeof times.tv : sizeof times.secs;
    if (!*arg || read_arg(t, *arg, &times, len) != 0)
        return CONTINUE;
    for (int i = 0; i < 2; i++) {
        int64_t secs, nsecs;
        if (how == TIMESPEC) {
            if (times.ts[i].tv_nsec == UTIME_NOW || times.ts[i].tv_nsec == UTIME_OMIT)
                continue;
            if (times.ts[i].tv_nsec < 0 || times.ts[i].tv_nsec >= NS)
                return CONTINUE;
            secs = times.ts[i].tv_sec;
            nsecs = times.ts[i].tv_nsec;
        } else if (how == TIMEVAL) {
            if (times.tv[i].tv_usec < 0 || times.tv[i].tv_usec >= 1000000)
                return CONTINUE;
            secs = times.tv[i].tv_sec;
            nsecs = (int64_t)times.tv[i].tv_usec * 1000;
        } else {
            secs = times.secs[i];
            nsecs = 0;
        }
        map_file_time(t->clock, 1, &secs, &nsecs);
        if (how == TIMESPEC) {
            times.ts[i].tv_sec = (time_t)secs;
            times.ts[i].tv_nsec = (long)nsecs;
        } else if (how == TIMEVAL) {
            times.tv[i].tv_sec = (time_t)secs;
            times.tv[i].tv_usec = (suseconds_t)(nsecs / 1000);
        } else {
            times.secs[i] = secs;
        }
    }
    uint64_t at = put_scratch(t, &times, len);
    if (at) {
        *arg = at;
        t->changed = 1;
    }
    return CONTINUE;
}

/* utimes(path, times) */
struct vb_decision trace_utimes(struct vb_tracee *t)
{
    return set_file_times(t, &t->regs.rsi, TIMEVAL);
}

/* futimesat(dirfd, path, times) */
struct vb_decision trace_futimesat(struct vb_tracee *t)
{
    return set_file_times(t, &t->regs.rdx, TIMEVAL);
}

/* utime(path, struct utimbuf *times): seconds */
struct vb_decision trace_utime(struct vb_tracee *t)
{
    return set_file_times(t, &t->regs.rsi, UTIMBUF);
}

/* utimensat(dirfd, path, times, flags): "now" is the sandbox's now; with
 * file_times, explicit times are on the sandbox's clock and "now" the
 * kernel's (it reads back as the sandbox's now) */
struct vb_decision trace_utimensat(struct vb_tracee *t)
{
    struct timespec times[2];
    struct timespec now = ns_ts(clock_read(t->clock, CLOCK_REALTIME));
    if (t->clock->file_times)
        return set_file_times(t, &t->regs.rdx, TIMESPEC);
    if (!t->regs.rdx) {
        times[0] = times[1] = now;
    } else {
        if (read_arg(t, t->regs.rdx, times, sizeof times) != 0)
            return CONTINUE;
        if (times[0].tv_nsec != UTIME_NOW && times[1].tv_nsec != UTIME_NOW)
            return CONTINUE;
        for (int i = 0; i < 2; i++)
            if (times[i].tv_nsec == UTIME_NOW)
                times[i] = now;
    }
    uint64_t at = put_scratch(t, times, sizeof times);
    if (at) {
        t->regs.rdx = at;
        t->changed = 1;
    }
    return CONTINUE;
}

/* times(buf): the kernel fills in the caller's CPU times; its return value,
 * ticks since the host booted, becomes ticks since the sandbox's boot */
struct vb_decision trace_times(struct vb_tracee *t)
{
    t->fix = FIX_TICKS;
    return CONTINUE;
}

/* arch_prctl(code, addr): ARCH_MAP_VDSO_* would map a fresh vDSO, and with it the host's clock data */
struct vb_decision trace_arch_prctl(struct vb_tracee *t)
{
    if (t->regs.rdi >= 0x2001 && t->regs.rdi <= 0x2003)
        return RETURN(-EPERM);
    return CONTINUE;
}

/* --- the tracer ------------------------------------------------------------------------ */

typedef struct vb_decision (*vb_time_handler)(struct vb_tracee *t);

static const struct {
    int nr;
    vb_time_handler handler;
} handlers[] = {
#define VB_SYSCALL(name, group, how, mask, note)
#define VB_IOCTL(request, name, group, note)
#define VB_INTERPOSE(name, family, args, note)
#define VB_TIME_CLOCK(name, trap, args, note)
#define VB_TIME(name, trap, note) {__NR_##name, trace_##name},
#include "syscall_table.h"
#undef VB_SYSCALL
#undef VB_IOCTL
#undef VB_INTERPOSE
#undef VB_TIME_CLOCK
#undef VB_TIME
};

/* The calls whose end the tracer follows, by thread: a frozen sandbox's
 * timed waits, and remaining times to scale (a full table only loses that). */
static struct {
    pid_t tid;
    int64_t started;           /* host CLOCK_MONOTONIC at its start */
    int64_t jumped;            /* the clock's jumps then */
    int64_t cap;               /* frozen: its timeout, virtual ns (0: none) */
    int fix;                   /* FIX_* */
    uint64_t fix_at;
} ending[256];

static int64_t unscale(const struct vb_clock *clock, int64_t real_ns)
{
    double v = (double)real_ns * clock->rate;
    return v > 9.2e18 ? INT64_MAX : (int64_t)v;
}

/* The remaining time the kernel wrote at `at`, turned into the sandbox's time. */
static void fix_remaining(struct vb_tracee *t, int kind, uint64_t at)
{
    if (kind == FIX_REM || kind == FIX_ITIMERSPEC) {
        struct timespec ts[2];
        size_t n = kind == FIX_REM ? 1 : 2;
        if (tracee_read(t, at, ts, n * sizeof ts[0]) != 0)
            return;
        for (size_t i = 0; i < n; i++)
            ts[i] = ns_ts(unscale(t->clock, ts_ns(&ts[i])));
        tracee_write(t, at, ts, n * sizeof ts[0]);
    } else if (kind == FIX_ITIMERVAL) {
        struct timeval tv[2];
        if (tracee_read(t, at, tv, sizeof tv) != 0)
            return;
        for (int i = 0; i < 2; i++) {
            int64_t v = unscale(t->clock, (int64_t)tv[i].tv_sec * NS + (int64_t)tv[i].tv_usec * 1000);
            tv[i].tv_sec = (time_t)(v / NS);
            tv[i].tv_usec = (suseconds_t)(v % NS / 1000);
        }
        tracee_write(t, at, tv, sizeof tv);
    }
}

/* A followed call ended (its syscall-exit stop). Frozen, the clock moves to
 * where the wait took it, once (overlapping waits of several threads move it
 * once, not by their sum); a remaining time is scaled. */
static void on_call_end(struct vb_clock *clock, pid_t pid)
{
    for (size_t i = 0; i < VB_ARRAY_LEN(ending); i++) {
        if (ending[i].tid != pid)
            continue;
        ending[i].tid = 0;
        if (ending[i].cap) {
            int64_t took = host_ns(CLOCK_MONOTONIC) - ending[i].started;
            int64_t reached = ending[i].jumped + (took < ending[i].cap ? took : ending[i].cap);
            if (reached > jumped(clock))
                __atomic_store_n(&clock->jumped, reached, __ATOMIC_RELAXED);
        }
        struct vb_tracee t = {.pid = pid, .clock = clock};
        if (ending[i].fix && ptrace(PTRACE_GETREGS, pid, 0, &t.regs) == 0) {
            long rc = (long)t.regs.rax;
            /* rem is written on an interruption; the timers' values on success */
            if (ending[i].fix == FIX_STAT || ending[i].fix == FIX_STATX) {
                if (rc == 0)
                    fix_file_times(&t, ending[i].fix, ending[i].fix_at);
            } else if (ending[i].fix == FIX_TICKS) {
                if (rc < -4095 || rc >= 0) { /* not an error (-EFAULT) */
                    t.regs.rax = (unsigned long long)(clock_read(clock, CLOCK_BOOTTIME) / (NS / USER_HZ));
                    ptrace(PTRACE_SETREGS, pid, 0, &t.regs);
                }
            } else if (ending[i].fix == FIX_REM ? (rc == -EINTR || rc == -516 /* ERESTART_RESTARTBLOCK */)
                                                : rc == 0) {
                fix_remaining(&t, ending[i].fix, ending[i].fix_at);
            }
        }
        return;
    }
}

/* Handles a trapped call; returns 1 when the tracer must see its end (PTRACE_SYSCALL). */
static int on_trapped_call(struct vb_clock *clock, pid_t pid)
{
    struct vb_tracee t = {.pid = pid, .clock = clock};
    if (ptrace(PTRACE_GETREGS, pid, 0, &t.regs) != 0)
        return 0;
    /* SAFETY: a handler's CONTINUE runs a call the filter would have allowed
     * as it is, its timeouts or time stamps changed (see the top of this file) */
    struct vb_decision d = CONTINUE;
    for (size_t i = 0; i < VB_ARRAY_LEN(handlers); i++)
        if ((unsigned long long)handlers[i].nr == t.regs.orig_rax) {
            d = handlers[i].handler(&t);
            break;
        }
    if (d.kind == VB_DECIDE_RETURN) {
        t.regs.orig_rax = (unsigned long long)-1; /* skipped: the caller gets rax */
        t.regs.rax = (unsigned long long)d.value;
        t.changed = 1;
    }
    if (t.changed)
        ptrace(PTRACE_SETREGS, pid, 0, &t.regs);
    if (d.kind != VB_DECIDE_CONTINUE || (!t.wait_cap && !t.fix))
        return 0;
    for (size_t i = 0; i < VB_ARRAY_LEN(ending); i++) {
        if (ending[i].tid == 0 || ending[i].tid == pid) {
            ending[i].tid = pid;
            ending[i].started = host_ns(CLOCK_MONOTONIC);
            ending[i].jumped = jumped(clock);
            ending[i].cap = t.wait_cap;
            ending[i].fix = t.fix;
            ending[i].fix_at = t.fix_at;
            return 1;
        }
    }
    return 0;
}

/* Where the vDSO and its data pages ([vvar], [vvar_vclock]) are mapped in
 * `pid`, from /proc/PID/maps: 0, or -1 without /proc in the view. */
static int find_vdso(const struct vb_clock *clock, pid_t pid, uint64_t *start, uint64_t *end)
{
    if (!clock->own_proc)
        return -1;
    char path[48] = "/proc/", num[24];
    format_int(pid, num);
    vb_strlcat(path, num, sizeof path);
    vb_strlcat(path, "/maps", sizeof path);
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return -1;
    static char text[1 << 16];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof text - 1 && (n = read(f, text + len, sizeof text - 1 - len)) > 0)
        len += (size_t)n;
    close(f);
    text[len] = '\0';
    *start = UINT64_MAX;
    *end = 0;
    for (char *line = text; *line;) {
        char *eol = strchr(line, '\n');
        if (eol)
            *eol = '\0';
        if (strstr(line, "[vdso]") || strstr(line, "[vvar")) {
            uint64_t lo = 0, hi = 0;
            const char *p = line;
            for (; *p && *p != '-'; p++)
                lo = lo * 16 + (uint64_t)(*p <= '9' ? *p - '0' : (*p | 32) - 'a' + 10);
            for (p++; *p && *p != ' '; p++)
                hi = hi * 16 + (uint64_t)(*p <= '9' ? *p - '0' : (*p | 32) - 'a' + 10);
            if (lo < *start)
                *start = lo;
            if (hi > *end)
                *end = hi;
        }
        if (!eol)
            break;
        line = eol + 1;
    }
    return 0;
}

/* One single step of the tracee: 0, or -1 when it ended (*status says how).
 * A signal that stops it first is kept in *pending, for delivery afterwards. */
static int step(pid_t pid, int *status, int *pending)
{
    if (ptrace(PTRACE_SINGLESTEP, pid, 0, 0) != 0)
        return 0;
    while (waitpid(pid, status, __WALL) < 0 && errno == EINTR)
        ;
    if (!WIFSTOPPED(*status))
        return -1;
    if (WSTOPSIG(*status) != SIGTRAP && ((unsigned)*status >> 16) == 0)
        *pending = WSTOPSIG(*status);
    return 0;
}

/* Makes the tracee, stopped at its exec, run munmap(start, end - start): a
 * `syscall` written over its next instruction, one single step, everything
 * restored. The exec stop is inside execve, whose return would overwrite the
 * registers set here: a first single step leaves the system call. Returns 0,
 * or -1 and *status when the tracee ended meanwhile. */
static int unmap_in(struct vb_tracee *t, uint64_t start, uint64_t end, int *status, int *pending)
{
    if (step(t->pid, status, pending) != 0)
        return -1;
    struct user_regs_struct saved, call;
    uint64_t code;
    if (ptrace(PTRACE_GETREGS, t->pid, 0, &saved) != 0 || tracee_read(t, saved.rip, &code, 8) != 0)
        return 0;
    uint64_t patched = (code & ~(uint64_t)0xffff) | 0x050f; /* 0f 05: syscall */
    if (tracee_poke(t, saved.rip, &patched, 8) != 0)
        return 0;
    call = saved;
    call.rax = __NR_munmap;
    call.rdi = start;
    call.rsi = end - start;
    ptrace(PTRACE_SETREGS, t->pid, 0, &call);
    for (int tries = 0; tries < 16; tries++) {
        if (step(t->pid, status, pending) != 0)
            return -1;
        struct user_regs_struct now;
        if (ptrace(PTRACE_GETREGS, t->pid, 0, &now) != 0 || now.rip != saved.rip)
            break; /* past the syscall */
    }
    tracee_poke(t, saved.rip, &code, 8);
    ptrace(PTRACE_SETREGS, t->pid, 0, &saved);
    return 0;
}

/* A new program: the vDSO is hidden from it (AT_SYSINFO_EHDR -> AT_IGNORE
 * in its auxiliary vector), so its libc or runtime makes real system calls
 * for the time, and unmapped with its data pages, so that no program can
 * call into it or read the host's clock data there. The stack holds argc,
 * argv[], NULL, envp[], NULL, then the auxv pairs. Returns as unmap_in. */
static int on_exec(const struct vb_clock *clock, pid_t pid, int *status, int *pending)
{
    struct vb_tracee t = {.pid = pid};
    if (ptrace(PTRACE_GETREGS, pid, 0, &t.regs) != 0)
        return 0;
    uint64_t at = t.regs.rsp, word;
    if (tracee_read(&t, at, &word, 8) != 0)
        return 0;
    at += 8 * (word + 2); /* past argc, argv[] and its NULL */
    for (int n = 0; n < (1 << 20); n++, at += 8) { /* envp[] up to its NULL */
        if (tracee_read(&t, at, &word, 8) != 0)
            return 0;
        if (!word)
            break;
    }
    at += 8;
    for (int n = 0; n < 256; n++, at += 16) {
        if (tracee_read(&t, at, &word, 8) != 0 || word == 0 /* AT_NULL */)
            break;
        if (word == AT_SYSINFO_EHDR_) {
            uint64_t ignore = AT_IGNORE_;
            tracee_write(&t, at, &ignore, 8);
            break;
        }
    }
    uint64_t start, end;
    if (find_vdso(clock, pid, &start, &end) == 0 && start < end)
        return unmap_in(&t, start, end, status, pending);
    return 0;
}

/* Strict: rdtsc and rdtscp fault (PR_SET_TSC), as the kernel's SIGSEGV on
 * its way to the tracee shows. The tracer answers them instead, from a
 * counter of the sandbox's own: a 1 GHz TSC that counts its CLOCK_BOOTTIME
 * in ns, as a machine's counts from its power-on. The dynamic loader reads
 * the TSC at every start (glibc's rtld timing): a fault would kill every
 * program. Returns 1 when it answered (the signal is dropped). */
static int emulate_tsc(const struct vb_clock *clock, pid_t pid)
{
    siginfo_t info;
    struct vb_tracee t = {.pid = pid};
    uint64_t code;
    /* only the kernel's own fault: SI_KERNEL cannot be sent by a program */
    if (!clock->strict || ptrace(PTRACE_GETSIGINFO, pid, 0, &info) != 0 || info.si_code != SI_KERNEL ||
        ptrace(PTRACE_GETREGS, pid, 0, &t.regs) != 0 || tracee_read(&t, t.regs.rip, &code, 8) != 0)
        return 0;
    unsigned length;
    if ((code & 0xffff) == 0x310f) /* 0f 31: rdtsc */
        length = 2;
    else if ((code & 0xffffff) == 0xf9010f) /* 0f 01 f9: rdtscp, also sets ecx (TSC_AUX: cpu 0) */
        length = 3;
    else
        return 0;
    uint64_t tsc = (uint64_t)clock_read(clock, CLOCK_BOOTTIME);
    t.regs.rax = tsc & 0xffffffffu;
    t.regs.rdx = tsc >> 32;
    if (length == 3)
        t.regs.rcx = 0;
    t.regs.rip += length;
    return ptrace(PTRACE_SETREGS, pid, 0, &t.regs) == 0;
}

int vb_time_on_stop(struct vb_clock *clock, pid_t pid, int *status)
{
    int sig = WSTOPSIG(*status);
    int event = (unsigned)*status >> 16;
    int inject = 0;
    if (sig == (SIGTRAP | 0x80)) { /* syscall-exit stop: a frozen sandbox's wait ended */
        on_call_end(clock, pid);
        ptrace(PTRACE_CONT, pid, 0, 0);
        return 0;
    }
    switch (event) {
    case PTRACE_EVENT_SECCOMP:
        if (on_trapped_call(clock, pid)) {
            ptrace(PTRACE_SYSCALL, pid, 0, 0);
            return 0;
        }
        break;
    case PTRACE_EVENT_EXEC:
        if (on_exec(clock, pid, status, &inject) != 0)
            return 1; /* it ended meanwhile: *status says how */
        break;
    case PTRACE_EVENT_FORK:
    case PTRACE_EVENT_VFORK:
    case PTRACE_EVENT_CLONE:
        break; /* the new thread or process is traced too, and stops on its own */
    case PTRACE_EVENT_STOP:
        if (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU) {
            /* a group stop: stay stopped, yet let SIGCONT and SIGKILL through */
            ptrace(PTRACE_LISTEN, pid, 0, 0);
            return 0;
        }
        break; /* a new tracee's first stop */
    default:
        /* a signal on its way: deliver it, unless it is a strict sandbox's rdtsc */
        inject = sig == SIGSEGV && emulate_tsc(clock, pid) ? 0 : sig;
        break;
    }
    ptrace(PTRACE_CONT, pid, 0, (void *)(uintptr_t)inject);
    return 0;
}

#else

int vb_time_on_stop(struct vb_clock *clock, pid_t pid, int *status)
{
    ptrace(PTRACE_CONT, pid, 0, 0);
    return 0;
}

#endif
