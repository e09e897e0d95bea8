/* Shared by the C core's files; not part of the public (cffi) header. */
#ifndef VIEWBOX_INTERNAL_H
#define VIEWBOX_INTERNAL_H

#include <limits.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>

#include "viewbox.h"

/* Syscalls newer than the oldest headers we build against (Linux 6.1). */
#ifndef __NR_open_tree_attr
#define __NR_open_tree_attr 467
#endif
#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#define __NR_landlock_add_rule 445
#define __NR_landlock_restrict_self 446
#endif

#define VB_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* --- child-side error reporting (spawn.c) ---------------------------------
 * Between clone() and exec() only async-signal-safe steps run: no malloc, no
 * stdio, no locks. A failing step calls vb_child_fail(), which writes one
 * struct vb_error to the error pipe and exits with `exit_code`. The list of
 * strings (NULL-terminated) is concatenated into vb_error.what. */
__attribute__((noreturn, sentinel))
void vb_child_fail(int err, int exit_code, ...);

/* Bounded string helpers usable in the child. Return -ENAMETOOLONG when the
 * result does not fit. */
int vb_strlcpy(char *dst, const char *src, size_t cap);
int vb_strlcat(char *dst, const char *src, size_t cap);

/* mounts.c: build the view described by the plan and pivot_root into it. */
void vb_build_view(const struct vb_plan *plan);

/* landlock.c: restrict the calling thread with the plan's ruleset. */
void vb_apply_landlock(const struct vb_plan *plan);

/* seccomp.c: install the filter for `deny_groups`, sending the calls of
 * `interpose_families` to a supervisor and those of `time_traps` (VB_TRAP_*)
 * to the tracing init. Returns the listener fd when interposing, else -1. */
int vb_apply_seccomp(uint64_t deny_groups, uint64_t interpose_families, uint64_t time_traps);

/* sys_time.c: the time view. The clock lives in a page shared (MAP_SHARED,
 * made before the clone) by the init, which traces the command (its waits,
 * and a frozen clock's jumps), and the caller's process, whose supervisor
 * answers the command's clock reads from it; the supervisor's record of the
 * sandbox owns it. */
struct vb_clock {
    int64_t origin_mono;       /* the host's CLOCK_MONOTONIC when the sandbox started */
    int64_t real_base;         /* the sandbox's CLOCK_REALTIME then */
    int64_t mono_base;         /* its CLOCK_MONOTONIC and CLOCK_BOOTTIME then */
    int64_t offset;            /* tracking: the sandbox's CLOCK_REALTIME is the host's plus this */
    int track;                 /* rate 1, not frozen, no start: follow the host's realtime */
    double rate;
    int frozen;
    int64_t jumped;            /* frozen: what the sandbox's sleeps moved it (atomic: the init
                                  writes it, the supervisor reads it) */
    int spin;                  /* more than one CPU: the init waits for tracees awake a moment */
    int own_proc;              /* /proc is the sandbox's: /proc/PID names a tracee */
    int strict;                /* [time].strict: hide the host's uptime where it is a count too */
    int file_times;            /* file times map host <-> sandbox (file_time_*) */
    int64_t origin_real;       /* the host's CLOCK_REALTIME when the sandbox started */
};
/* In the caller, before clone: a shared clock, its origin read from the host's clocks
 * (munmap it with sizeof *clock). NULL and errno if it cannot be mapped. */
struct vb_clock *vb_clock_new(const struct vb_plan *plan);
/* In the init, before it forks anything: a time namespace for its children
 * whose MONOTONIC and BOOTTIME start at the clock's mono_base. */
void vb_time_namespace(const struct vb_clock *clock);
/* In the init, once the view is built: /proc/stat with the sandbox's boot instant. */
void vb_time_proc_stat(struct vb_clock *clock);
/* In the init: trace the just-forked command, which waits on `go_w`'s pipe
 * until this is done (the write end is closed here). */
void vb_time_trace(pid_t command, int go_w);
/* In the init's wait loop: a traced thread `pid` stopped with `*status`;
 * handles it (a trapped call, an exec, a signal, a group stop) and resumes
 * it: 0. Returns 1 when the thread ended meanwhile, *status then saying how
 * (to be handled as any other wait result). */
int vb_time_on_stop(struct vb_clock *clock, pid_t pid, int *status);

/* The network counters (viewbox.h) live in a page shared (MAP_SHARED, made
 * before the clone) by the caller's process, where the supervisor counts the
 * connections it makes for the sandbox, and the sandbox's forwarder, which
 * counts what it relays. In the caller's process two hold it at most (the
 * child record until vb_wait, the supervisor's record of the sandbox): the
 * last to let go unmaps it. */
struct vb_net_counters {
    _Atomic uint64_t connections_in, connections_out, bytes_in, bytes_out;
    _Atomic int holders;
};
struct vb_net_counters *vb_net_counters_new(void); /* one holder; NULL and errno */
void vb_net_counters_hold(struct vb_net_counters *counters);
void vb_net_counters_release(struct vb_net_counters *counters);

/* forward.c: relay connections to plan->publish's listeners into the sandbox.
 * Setup (0 or -errno), then the forwarder process's main loop (never returns),
 * counting into `counters` (may be NULL). */
int vb_forward_setup(const struct vb_plan *plan);
__attribute__((noreturn)) void vb_forward_run(const struct vb_plan *plan, struct vb_net_counters *counters);

/* supervisor.c: start serving a sandbox's listener and, with path rules, its
 * broker socket, and with a time view answering clock reads from `clock`
 * (takes ownership of the three, releasing them on failure too). Its events
 * go to a duplicate of plan->audit_fd (-1: none); the connections it makes
 * for the sandbox are counted in `counters` (held meanwhile; may be NULL). */
int vb_supervisor_add(struct vb_supervisor *sup, int listener, int broker, const struct vb_plan *plan,
                      struct vb_net_counters *counters, struct vb_clock *clock);

#endif
