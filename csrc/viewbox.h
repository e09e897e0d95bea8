/* viewbox C core: the one public header, bound by cffi (viewbox/_build.py).
 *
 * The Python side compiles a policy into a flat `struct vb_plan`; the C core
 * spawns the sandbox from it (clone -> uid maps -> mounts -> pivot_root ->
 * landlock -> rlimits -> caps -> seccomp -> exec) without running any Python
 * in the child. The C core hard-codes no policy: everything it enforces comes
 * from the plan; the syscall table (syscall_table.h) says what each syscall
 * group is, the plan says which groups are denied.
 *
 * Conventions: functions return 0 or -errno. Errors in the child come back as
 * a `struct vb_error` record ("<what>: <strerror(err)>").
 *
 * This file is read by cffi's cdef after the build script drops the
 * preprocessor lines: keep it to plain declarations and integer #defines.
 */
#ifndef VIEWBOX_H
#define VIEWBOX_H

#include <stdint.h>
#include <sys/types.h>

/* --- mount operations, applied in order inside the sandbox's mount namespace */
#define VB_MOUNT_BIND  1   /* bind `source` (host path) onto `target` (recursive) */
#define VB_MOUNT_TMPFS 2   /* fresh tmpfs on `target`, options in `data` */
#define VB_MOUNT_PROC  3   /* fresh procfs for the sandbox's pid namespace */
#define VB_MOUNT_DEV   4   /* minimal /dev: null zero full random urandom tty, pts, shm (`data`: shm's tmpfs options) */
#define VB_MOUNT_HIDE  5   /* make `target` empty: empty read-only dir or empty file */

#define VB_MF_RDONLY   1   /* read-only (recursively, for binds) */
#define VB_MF_OPTIONAL 2   /* skip silently when source or target is missing */

struct vb_mount {
    int kind;
    unsigned flags;
    const char *source;    /* host path (BIND only), else NULL */
    const char *target;    /* absolute path inside the view */
    const char *data;      /* tmpfs options ("size=64m,mode=1777"), or NULL */
};

struct vb_landlock_rule {
    const char *path;      /* absolute path inside the view */
    uint64_t access;       /* LANDLOCK_ACCESS_FS_* bits */
};

struct vb_rlimit {
    int resource;          /* RLIMIT_* */
    uint64_t soft;
    uint64_t hard;
};

struct vb_fd_map {
    int parent_fd;         /* fd in the calling process */
    int child_fd;          /* number it gets in the sandboxed command */
};

/* --- per-path rules, layer 3: [fs].deny / ask / allow globs ------------- */
#define VB_ACCESS_READ  1   /* open for reading, stat, access(R_OK), readlink, listing */
#define VB_ACCESS_WRITE 2   /* open for writing, create, truncate, unlink, rename, link */
#define VB_ACCESS_EXEC  4   /* execve */

#define VB_RULE_ALLOW 1
#define VB_RULE_DENY  2
#define VB_RULE_ASK   3     /* the supervisor asks (vb_supervisor_next_request) */

struct vb_path_rule {
    const char *glob;      /* absolute pattern over canonical paths inside the view */
    unsigned access;       /* VB_ACCESS_* it applies to */
    int action;            /* VB_RULE_* */
    const char *origin;    /* where it was written, for events ("p.toml:12: [fs].deny[0]") */
};

/* --- [net].publish: a host port relayed to a port inside ---------------- */
struct vb_publish {
    int host_fd;           /* listening socket the caller bound on the host */
    int port;              /* relayed to 127.0.0.1:port in the sandbox's network */
};

/* --- [net].allow: destinations the supervisor connects to for the sandbox */
struct vb_net_rule {
    int family;            /* AF_INET or AF_INET6 */
    uint8_t address[16];   /* network byte order: 4 bytes for AF_INET */
    unsigned prefix;       /* leading bits that must match */
    unsigned port_min, port_max; /* inclusive */
    const char *origin;    /* where it was written, for events ("p.toml:9: [net].allow[0]") */
};

#define VB_BASE_HOST  1    /* the host's / read-only, recursively */
#define VB_BASE_EMPTY 2    /* an empty read-only tmpfs */

struct vb_plan {
    const char *const *argv;        /* NULL-terminated; argv[0] is looked up in PATH inside */
    const char *const *envp;        /* NULL-terminated, the command's whole environment */
    const char *path_search;        /* PATH used to find argv[0] inside the view */
    const char *workdir;            /* inside the view */
    const char *hostname;           /* NULL: keep the host's (UTS ns is still private) */

    int base;                       /* VB_BASE_* */
    const struct vb_mount *mounts;
    size_t n_mounts;

    int unshare_net;                /* 1: own net namespace, loopback up; 0: host network */
    int netns_fd;                   /* -1, or a network namespace the caller set up (mode
                                       "private"): the sandbox is cloned into it, instead
                                       of a new one (needs CAP_SYS_ADMIN: root) */
    uint32_t uid, gid;              /* identity inside the sandbox */
    uint32_t outer_uid, outer_gid;  /* who that identity is on the host (the caller) */
    int map_all_ids;                /* 1: identity-map every id (caller is root on the host) */

    int landlock_abi;               /* 0: do not apply Landlock */
    uint64_t landlock_handled_fs;   /* rights the ruleset restricts */
    uint64_t landlock_scopes;       /* LANDLOCK_SCOPE_* (ABI >= 6) */
    const struct vb_landlock_rule *landlock_rules;
    size_t n_landlock_rules;

    uint64_t seccomp_deny_groups;   /* bitmask of VB_GROUP_* denied with EPERM */

    const struct vb_rlimit *rlimits;
    size_t n_rlimits;

    const struct vb_fd_map *fds;    /* every other fd is closed before exec */
    size_t n_fds;

    uint64_t wall_ms;               /* 0, or the command's time limit: when it passes, the
                                       sandbox's init kills every process in it (even if
                                       nobody waits on the sandbox) and reports it */

    uint64_t interpose_families;    /* VB_FAMILY_*: syscalls the supervisor sees (0: none) */
    struct vb_supervisor *supervisor;/* serves them; required when interpose_families != 0 */
    int audit_fd;                   /* -1, or where the supervisor writes JSON-lines events */
    uint64_t sandbox_id;            /* names the sandbox in its events */

    const struct vb_path_rule *path_rules; /* in order: the last matching rule decides */
    size_t n_path_rules;            /* > 0: the supervisor emulates path calls through the
                                       sandbox's broker (needs VB_FAMILY_FS interposed) */
    int ask_upcall;                 /* 1: VB_RULE_ASK waits for vb_supervisor_answer();
                                       0: it denies, as nobody is there to ask */

    /* the time view (sys_time.c): the sandbox's own clock. 0: the host's, untouched */
    int time_view;
    int time_has_start;             /* 1: CLOCK_REALTIME starts at time_start_ns and runs on */
    int64_t time_start_ns;          /* ns since the epoch */
    int64_t time_offset_ns;         /* without a start: the host's CLOCK_REALTIME plus this */
    double time_rate;               /* virtual seconds per real second (> 0) */
    int time_frozen;                /* the clock moves only by the sandbox's own sleeps */
    int time_strict;                /* the host's uptime hidden: rdtsc emulated, times() translated */
    int time_file_times;            /* file times read and set on the sandbox's clock (stat, utimes) */

    int cgroup_fd;                  /* -1, or a cgroup v2 dir fd: clone straight into it */
    const int *cgroup_procs_fds;    /* open cgroup.procs files (cgroup v1): the sandbox's init */
    size_t n_cgroup_procs_fds;      /* is written into each before anything of it runs */

    int listen_fds;                 /* > 0: fds 3.. are listening sockets (plan->fds places
                                       them): the command gets LISTEN_FDS, LISTEN_FDNAMES and
                                       LISTEN_PID (its own pid, set right before exec) */
    const char *listen_fdnames;     /* LISTEN_FDNAMES' value: names joined by ':' */

    const struct vb_publish *publish;/* relayed by the forwarder, a process the sandbox's */
    size_t n_publish;               /* init forks before the command (forward.c) */

    const struct vb_net_rule *net_allow; /* connect() to these is performed by the */
    size_t n_net_allow;             /* supervisor, from the host (needs VB_FAMILY_NET) */
    int deny_note_fd;               /* -1, or where a one-line note goes the first time a
                                       destination is refused ("viewbox: denied connect ...") */
    int resolver;                   /* 1: [net].allow names domains. The sandbox gets its
                                       own DNS resolver address, 127.0.0.53:53: the init binds
                                       a UDP socket there in the sandbox's network and hands
                                       it to the caller (vb_child.resolver_fd), who answers
                                       for the allowed names and pins their addresses with
                                       vb_supervisor_pin(); the view's /etc/resolv.conf names
                                       it (needs VB_FAMILY_NET and unshare_net) */
};

/* --- results ----------------------------------------------------------- */

#define VB_EXIT_SETUP     125      /* viewbox could not set the sandbox up */
#define VB_EXIT_NOEXEC    126      /* the command was found but could not be executed */
#define VB_EXIT_NOTFOUND  127      /* the command was not found inside the view */

struct vb_error {
    int err;                        /* errno of the failing step */
    int exit_code;                  /* VB_EXIT_* */
    char what[4352];                /* what failed, naming the path or flag */
};

/* What crossed the network boundary of a sandbox with its own network, as far
 * as viewbox carries it: connections the supervisor made for [net].allow, and
 * connections and bytes the forwarder relayed for [net].publish (internal). */
struct vb_net_counters;

/* The sandbox's job-control stops, as its init holds them (shared memory, internal). */
struct vb_job;

struct vb_child {
    int pid;                        /* host pid of the sandbox's init (pid 1 inside) */
    int pidfd;                      /* pidfd of that init: signals, polling */
    int status_fd;                  /* readable once the command ended: 4-byte wait status */
    int resolver_fd;                /* -1, or with plan.resolver: the sandbox's DNS socket,
                                       bound to 127.0.0.53:53 inside (the caller closes it) */
    struct vb_net_counters *net_counters; /* NULL with the host's network; vb_wait reads them */
    struct vb_job *job;             /* vb_job_stopped reads it; vb_wait unmaps it */
};

/* Spawn a sandbox from `plan`. On success fills `child` and returns 0: the
 * command has been exec'd. On failure returns -errno; when the failure
 * happened in the child, `error` describes it and no process is left. */
int vb_spawn(const struct vb_plan *plan, struct vb_child *child, struct vb_error *error);

/* What the command's processes used (every process the sandbox's init reaped;
 * the init itself only when it was killed before it could report). */
struct vb_usage {
    int64_t user_us;                /* CPU time in user mode, microseconds */
    int64_t system_us;              /* CPU time in the kernel, microseconds */
    int64_t max_rss_kib;            /* largest resident set of any one process, KiB */
    int64_t in_blocks;              /* filesystem input operations (512-byte blocks) */
    int64_t out_blocks;             /* filesystem output operations (512-byte blocks) */
    int64_t wall_expired;           /* 1: the init ended the sandbox at plan.wall_ms */
    int64_t broker_lost;            /* 1: the init ended the sandbox because its broker was
                                       gone (path calls could no longer be decided) */
    int64_t left_running;           /* processes of the sandbox still running when the command
                                       ended (the init's own helpers aside), killed with it: a
                                       program that daemonized, say. -1: not known (the init
                                       could not count them, or did not report) */
    /* its own network's traffic that viewbox carried (-1 each with the host's network) */
    int64_t net_connections_in;     /* accepted by the forwarder ([net].publish) */
    int64_t net_connections_out;    /* made by the supervisor ([net].allow) */
    int64_t net_bytes_in;           /* relayed in by the forwarder */
    int64_t net_bytes_out;          /* relayed out by the forwarder */
};

/* Reads the command's wait status once status_fd is readable, reaps the init
 * and fills *usage. Returns 0 and sets *wstatus, or -errno. */
int vb_wait(struct vb_child *child, int *wstatus, struct vb_usage *usage);

/* Whether the sandbox's init holds it stopped now (SIGTSTP, SIGTTIN or SIGTTOU reached the
 * init: from the caller, or from the terminal, whose process group the init shares), 1 or 0;
 * *held_ns: how long it held it stopped before, in all. Read while it runs, so that the
 * caller's own wall-time watch does not count that time either. */
int vb_job_stopped(const struct vb_child *child, int64_t *held_ns);

/* --- the supervisor: layer 3, seccomp user notification ----------------
 * One thread serves every sandbox spawned with it: an epoll loop over their
 * listener fds and broker sockets. Each interposed call is decoded from the
 * syscall table into one JSON line on the sandbox's audit fd. Without path
 * rules a call is allowed as it is (layers 0-2 hold every decision); with
 * them it is emulated by the sandbox's broker (csrc/broker.h) and decided by
 * the rules, and ask rules wait for an answer from the caller's side. */

#define VB_FAMILY_FS   1           /* path-based filesystem calls */
#define VB_FAMILY_EXEC 2           /* execve, execveat */
#define VB_FAMILY_NET  4           /* connect: the egress allowlist ([net].allow) */
#define VB_FAMILY_CLOCK 8          /* clock reads: the time view's clock (needs time_view) */

struct vb_supervisor;

/* A supervisor with a wake-up fd; NULL and errno on failure. */
struct vb_supervisor *vb_supervisor_new(void);
/* Serves notifications until vb_supervisor_stop(); call it without the GIL. */
int vb_supervisor_run(struct vb_supervisor *sup);
/* Makes vb_supervisor_run() return (from any thread). */
void vb_supervisor_stop(struct vb_supervisor *sup);
/* How many sandboxes it serves now (their listeners still open). */
int vb_supervisor_count(struct vb_supervisor *sup);
/* Frees it; only after vb_supervisor_run() has returned. */
void vb_supervisor_free(struct vb_supervisor *sup);

/* Adds a destination to a served sandbox's [net].allow while it runs: an
 * address a name of its allowlist resolved to (`rule` is copied, its origin
 * too; `name` is said with refusals of that address on other ports).
 * 0, -ESRCH (no such sandbox served), -ENOSPC (VB_MAX_PINS reached), -ENOMEM. */
#define VB_MAX_PINS 4096
int vb_supervisor_pin(struct vb_supervisor *sup, uint64_t sandbox_id, const struct vb_net_rule *rule,
                      const char *name);

/* An access an ask rule holds until the caller's side answers. */
struct vb_request {
    uint64_t token;                 /* names it in vb_supervisor_answer() */
    uint64_t sandbox_id;
    int pid;                        /* the calling thread, host pid */
    unsigned access;                /* VB_ACCESS_* */
    char syscall[32];
    char path[4096];                /* canonical path inside the view */
    char rule[256];                 /* origin of the ask rule */
};

#define VB_ANSWER_DENY   0          /* this call fails with EACCES */
#define VB_ANSWER_ONCE   1          /* this call goes ahead */
#define VB_ANSWER_ALWAYS 2          /* this one and every later one on the same path and access */

/* An eventfd, readable while requests wait; read it to rearm. */
int vb_supervisor_request_fd(struct vb_supervisor *sup);
/* Takes the oldest waiting request: 0, or -EAGAIN when there is none. */
int vb_supervisor_next_request(struct vb_supervisor *sup, struct vb_request *out);
/* Answers a request (from any thread): 0, or -ENOENT if it no longer waits. */
int vb_supervisor_answer(struct vb_supervisor *sup, uint64_t token, int answer);

/* --- the syscall table (syscall_table.h), for docs, audit and `viewbox show` */

/* syscall groups, each a bit in vb_plan.seccomp_deny_groups */
#define VB_GROUP_IO_URING   1
#define VB_GROUP_BPF        2
#define VB_GROUP_PTRACE     4
#define VB_GROUP_KEYS       8
#define VB_GROUP_PERF       16
#define VB_GROUP_USERFAULT  32
#define VB_GROUP_HANDLES    64
#define VB_GROUP_MOUNT      128
#define VB_GROUP_NAMESPACE  256
#define VB_GROUP_KERNEL     512
#define VB_GROUP_TIME_SET   1024
#define VB_GROUP_TTY_INJECT 2048
#define VB_GROUP_MEMORY     4096
#define VB_GROUP_ALL        8191

struct vb_syscall_info {
    const char *name;
    int nr;                         /* on the build architecture */
    uint64_t group;                 /* VB_GROUP_* */
    const char *note;               /* why it is in that group */
};

const struct vb_syscall_info *vb_syscall_table(size_t *count);
const char *vb_group_name(uint64_t group);

/* What the time view traps, as bits: clock reads go to the supervisor (SECCOMP_RET_USER_NOTIF,
 * VB_FAMILY_CLOCK), the rest to the sandbox's init (SECCOMP_RET_TRACE): */
#define VB_TRAP_CLOCK_REAL 1       /* reads of REALTIME-like clocks, gettimeofday, time */
#define VB_TRAP_CLOCK_MONO 2       /* reads of MONOTONIC/BOOTTIME-like clocks */
#define VB_TRAP_DEADLINES  4       /* calls that may take an absolute deadline */
#define VB_TRAP_TIMEOUTS   8       /* calls with a relative timeout (scaled when rate != 1) */
#define VB_TRAP_STAMPS     16      /* utimensat (UTIME_NOW is the sandbox's now) */
#define VB_TRAP_STRICT     32      /* [time].strict: times(), whose ticks count the host's uptime */
#define VB_TRAP_FILE_TIMES 64      /* [time].file_times = "sandbox": the stat family, explicit utimes */

/* The most instructions a seccomp program of viewbox may have: the buffer the sandbox's
 * command builds its program in, and the one core.seccomp_program() builds into, so a
 * program that builds for the caller also builds in the sandbox (the kernel's own cap,
 * BPF_MAXINSNS, is 4096). */
#define VB_SECCOMP_MAX_INSNS 512

/* Builds the seccomp program for `deny_groups`, `interpose_families` and
 * `time_traps` (VB_TRAP_*) into `out` (capacity in instructions); returns
 * the instruction count or -errno (-ENOSPC: more than `capacity`). Exposed
 * for tests and `viewbox show`. Each instruction is 8 bytes (struct sock_filter). */
int vb_seccomp_build(uint64_t deny_groups, uint64_t interpose_families, uint64_t time_traps, void *out,
                     size_t capacity);
/* The VB_TRAP_* bits a plan's time view needs (0 without one). */
uint64_t vb_time_traps(const struct vb_plan *plan);

/* The time view's rows of the syscall table (VB_TIME_CLOCK, VB_TIME), for `viewbox show --syscalls`. */
struct vb_time_info {
    const char *name;
    int nr;
    uint64_t trap;                  /* VB_TRAP_*: when the call is trapped */
    const char *note;
};
const struct vb_time_info *vb_time_table(size_t *count);

/* --- probes for `viewbox doctor` and fail-closed checks (probe.c) ------- */

/* Tries clone() with `flags` (CLONE_NEW*) in a throw-away child, with a user
 * namespace added when `with_userns`. Returns 0 if it worked, else -errno. */
int vb_probe_clone(unsigned long flags, int with_userns);
/* Landlock ABI version (>= 1), or -errno (-ENOSYS, -EOPNOTSUPP when disabled). */
int vb_probe_landlock_abi(void);
/* 0 if seccomp user notification is available (new listener works), else -errno. */
int vb_probe_seccomp_notify(void);
/* 0 if pidfd_open works, else -errno. */
int vb_probe_pidfd(void);
/* 0 if a process may PTRACE_SEIZE its own child (in a new user namespace when
 * `with_userns`), as the sandbox's init does for the time view; else -errno. */
int vb_probe_trace(int with_userns);

#endif
