/* The spawn path: clone -> uid maps -> view -> init (pid 1) -> command.
 *
 *   caller (Python)        sandbox init (pid 1)            command (pid 2)
 *   clone3(CLONE_NEW*) ──▶ PDEATHSIG, wait for maps
 *   write uid/gid maps ──▶ build the view, pivot_root
 *                          hostname, loopback up
 *                         [fork ─▶ broker (path rules only): the command's
 *                                  ids, Landlock, caps; serves the supervisor]
 *                          fork ─────────────────────────▶ setsid, fds, workdir,
 *                          close every fd but status       rlimits, ids, Landlock,
 *                          forward signals, reap           caps, seccomp, exec
 *   read error pipe: EOF = exec'd, a record = it failed (125/126/127)
 *   status pipe: the command's wait status when it ends
 *
 * Between clone and exec only async-signal-safe steps run (the caller may be
 * a multi-threaded Python process): no malloc, no stdio, no locks, and
 * further forks are raw clone syscalls so no atfork handler runs. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "internal.h"

/* struct clone_args of <linux/sched.h>, which clashes with <sched.h>. */
struct vb_clone_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
    uint64_t set_tid, set_tid_size, cgroup;
};
#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#define VB_CLONE_INTO_CGROUP 0x200000000ULL

#ifndef SECBIT_NOROOT
#define SECBIT_NOROOT (1 << 0)
#define SECBIT_NOROOT_LOCKED (1 << 1)
#define SECBIT_NO_SETUID_FIXUP (1 << 2)
#define SECBIT_NO_SETUID_FIXUP_LOCKED (1 << 3)
#define SECBIT_KEEP_CAPS_LOCKED (1 << 5)
#endif

#define MAX_FDS 256

/* The error pipe's write end in the child (each process has its own copy). */
static int child_errfd = -1;
/* In the init: the socket that carries the seccomp listener back to the caller;
 * in the command: its channel to the init, which takes the listener from it. -1: none. */
static int child_listener_sock = -1;
/* In the init and the forwarder: the network counters shared with the caller, or NULL. */
static struct vb_net_counters *child_counters;
/* Shared by the caller and the init, and no other process of the sandbox (the init marks
 * it MADV_DONTFORK): the stops the init holds (supervise_command), which the caller reads. */
struct vb_job {
    _Atomic int64_t held_ns;        /* the stops that ended, in all */
    _Atomic int stopped;            /* 1 while one is in force; cleared after held_ns grew */
};
/* In the init: the job-control state shared with the caller, or NULL. */
static struct vb_job *child_job;
/* The broker's end of its socket to the supervisor, or -1. */
static int child_broker_sock = -1;
/* The init's status pipe while the init places fds itself (see run_init), or -1. */
static int child_status_fd = -1;
/* 1 once the init placed the command's fds and applied Landlock itself (see run_init). */
static int init_did_fds_and_landlock;
/* The command's end of the pipe on which the init says it traces it (time view), or -1. */
static int child_trace_go = -1;
/* In the init: a procfs of the sandbox's pid namespace, to count what still runs when the
 * command ends (count_running), or -1. */
static int child_proc_fd = -1;

int vb_strlcpy(char *dst, const char *src, size_t cap)
{
    if (cap == 0)
        return -ENAMETOOLONG;
    dst[0] = '\0';
    return vb_strlcat(dst, src, cap);
}

int vb_strlcat(char *dst, const char *src, size_t cap)
{
    size_t len = strnlen(dst, cap);
    while (*src && len + 1 < cap)
        dst[len++] = *src++;
    dst[len] = '\0';
    return *src ? -ENAMETOOLONG : 0;
}

void vb_child_fail(int err, int exit_code, ...)
{
    struct vb_error record;
    memset(&record, 0, sizeof record);
    record.err = err;
    record.exit_code = exit_code;
    va_list ap;
    va_start(ap, exit_code);
    for (const char *part; (part = va_arg(ap, const char *)) != NULL;)
        vb_strlcat(record.what, part, sizeof record.what); /* truncation is fine here */
    va_end(ap);
    if (child_errfd >= 0) {
        const char *p = (const char *)&record;
        size_t left = sizeof record;
        while (left) {
            ssize_t n = write(child_errfd, p, left);
            if (n <= 0 && errno != EINTR)
                break;
            if (n > 0) {
                p += n;
                left -= (size_t)n;
            }
        }
    }
    _exit(exit_code);
}

#define FAIL(err, ...) vb_child_fail((err), VB_EXIT_SETUP, __VA_ARGS__, NULL)

static pid_t raw_fork(void)
{
    return (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
}

static void loopback_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    vb_strlcpy(ifr.ifr_name, "lo", sizeof ifr.ifr_name);
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
        FAIL(errno, "read the loopback interface's flags");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0)
        FAIL(errno, "bring the loopback interface up");
    close(s);
}

static void reset_signals(void)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL); /* fails harmlessly for SIGKILL, SIGSTOP and RT gaps */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* "stdin", "stdout", "stderr" or "fd N", for messages (child-safe: no stdio). */
static const char *fd_name(int fd)
{
    static const char *const std[] = {"stdin", "stdout", "stderr"};
    static char name[16];
    if (fd >= 0 && fd <= 2)
        return std[fd];
    char digits[12];
    int len = 0;
    for (unsigned v = (unsigned)fd; len == 0 || v; v /= 10)
        digits[len++] = (char)('0' + v % 10);
    vb_strlcpy(name, "fd ", sizeof name);
    size_t at = strlen(name);
    while (len)
        name[at++] = digits[--len];
    name[at] = '\0';
    return name;
}

/* Puts the plan's fds at their numbers and closes every other one, keeping
 * the error pipe (close-on-exec) above them all. */
static void setup_fds(const struct vb_plan *plan)
{
    if (plan->n_fds > MAX_FDS)
        FAIL(E2BIG, "too many file descriptors to pass");
    int top = 2;
    for (size_t i = 0; i < plan->n_fds; i++) {
        /* A directory from the host is a way out of the view (openat(fd,
         * "..")), and so is an O_PATH handle: refuse both. */
        struct stat st;
        int fl = fcntl(plan->fds[i].parent_fd, F_GETFL);
        if (fstat(plan->fds[i].parent_fd, &st) != 0 || fl < 0)
            FAIL(errno, "inspect a file descriptor passed to the command");
        if (S_ISDIR(st.st_mode) || (fl & O_PATH))
            vb_child_fail(0, VB_EXIT_SETUP, fd_name(plan->fds[i].child_fd),
                          " is a directory or path handle: passing it in would reach outside the view", NULL);
        if (plan->fds[i].child_fd > top)
            top = plan->fds[i].child_fd;
        if (plan->fds[i].parent_fd > top)
            top = plan->fds[i].parent_fd;
    }
    /* the error pipe, the sockets and the init's status pipe survive, above
     * everything, in this order */
    int *survivors[] = {&child_errfd, &child_listener_sock, &child_broker_sock, &child_status_fd, &child_proc_fd};
    int keep_top = top;
    for (size_t i = 0; i < VB_ARRAY_LEN(survivors); i++) {
        if (*survivors[i] < 0)
            continue;
        int moved = fcntl(*survivors[i], F_DUPFD_CLOEXEC, keep_top + 1);
        if (moved < 0)
            FAIL(errno, "move the error pipe or a socket to the supervisor");
        *survivors[i] = moved;
        keep_top = moved;
    }
    int staged[MAX_FDS];
    for (size_t i = 0; i < plan->n_fds; i++) {
        staged[i] = fcntl(plan->fds[i].parent_fd, F_DUPFD_CLOEXEC, keep_top + 1);
        if (staged[i] < 0)
            FAIL(errno, "duplicate a file descriptor for the command");
    }
    int max_target = 2;
    for (size_t i = 0; i < plan->n_fds; i++) {
        if (dup2(staged[i], plan->fds[i].child_fd) < 0)
            FAIL(errno, "place a file descriptor for the command");
        if (plan->fds[i].child_fd > max_target)
            max_target = plan->fds[i].child_fd;
    }
    for (int fd = 0; fd <= max_target; fd++) {
        int wanted = 0;
        for (size_t i = 0; i < plan->n_fds; i++)
            wanted |= plan->fds[i].child_fd == fd;
        if (!wanted)
            close(fd);
    }
    /* everything else the caller had open: nothing of the host leaks in */
    int from = max_target + 1;
    for (size_t i = 0; i < VB_ARRAY_LEN(survivors); i++) {
        int keep = *survivors[i]; /* ascending, as moved above */
        if (keep < 0)
            continue;
        if (from < keep && syscall(SYS_close_range, from, keep - 1, 0) != 0)
            FAIL(errno, "close inherited file descriptors");
        if (keep + 1 > from)
            from = keep + 1;
    }
    if (syscall(SYS_close_range, from, ~0U, 0) != 0)
        FAIL(errno, "close inherited file descriptors");
}

/* In the command: lets the init take the listener (its fd number, written on
 * the channel; the init copies it out with pidfd_getfd), waits until it has,
 * and forgets it: the sandbox must never hold the fd that answers its own
 * system calls. Only read and write: the filter may already send sendmsg to
 * the supervisor, which has no listener to hear it yet. */
static void hand_over_listener(int listener)
{
    char ack = 0;
    if (write(child_listener_sock, &listener, sizeof listener) != (ssize_t)sizeof listener ||
        read(child_listener_sock, &ack, 1) != 1 || ack != 'k')
        FAIL(EPIPE, "hand the seccomp listener to the sandbox's init");
    close(listener);
    close(child_listener_sock);
    child_listener_sock = -1;
}

/* In the init: sends the listener (and the resolver's socket, or -1) to the
 * caller and forgets them. */
static void send_listener(int listener, int resolver)
{
    int fds[2] = {listener, resolver};
    size_t n = resolver >= 0 ? 2 : 1;
    char byte = 'L';
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof fds)];
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = CMSG_SPACE(n * sizeof(int))};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(n * sizeof(int));
    memcpy(CMSG_DATA(cmsg), fds, n * sizeof(int));
    if (sendmsg(child_listener_sock, &msg, MSG_NOSIGNAL) != 1)
        FAIL(errno, "hand the seccomp listener to the supervisor");
    close(listener);
    if (resolver >= 0)
        close(resolver);
    close(child_listener_sock);
    child_listener_sock = -1;
}

/* In the init, for [net].allow by name: the sandbox's resolver address,
 * 127.0.0.53:53 in its own network. Bound here, by the root of the user
 * namespace that owns that network (port 53 is its to bind), and answered
 * from the caller's side, which gets the socket with the listener. */
static int bind_resolver(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in at;
    memset(&at, 0, sizeof at);
    at.sin_family = AF_INET;
    at.sin_port = htons(53);
    at.sin_addr.s_addr = htonl(0x7f000035); /* 127.0.0.53 */
    if (s < 0 || bind(s, (struct sockaddr *)&at, sizeof at) != 0)
        FAIL(errno, "bind the sandbox's DNS resolver address, 127.0.0.53:53");
    return s;
}

static void set_identity(const struct vb_plan *plan)
{
    /* uid 0 gains no capabilities at exec, and setuid keeps them until we
     * drop them ourselves; locked so nothing inside can undo it. */
    if (prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
                                     SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED) != 0)
        FAIL(errno, "set the securebits");
    for (int cap = 0; cap <= 63; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno == EINVAL)
            break; /* past the last capability this kernel knows */
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0)
        FAIL(errno, "clear the ambient capabilities");
    if (plan->map_all_ids) {
        /* Every id is mapped (the caller is root): choose ours explicitly.
         * Otherwise the single mapped id already is plan->uid/gid. */
        if (setgroups(0, NULL) != 0)
            FAIL(errno, "drop supplementary groups");
        if (setresgid(plan->gid, plan->gid, plan->gid) != 0)
            FAIL(errno, "set the group id");
        if (setresuid(plan->uid, plan->uid, plan->uid) != 0)
            FAIL(errno, "set the user id");
    }
}

static void drop_capabilities(void)
{
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capset, &header, data) != 0)
        FAIL(errno, "drop capabilities");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        FAIL(errno, "set no_new_privs");
}

static int has_prefix(const char *text, const char *prefix)
{
    return strncmp(text, prefix, strlen(prefix)) == 0;
}

/* "NAME=<value>" into `out` (child-safe: no stdio). */
static void format_variable(char *out, size_t cap, const char *name, unsigned value)
{
    char digits[16];
    int len = 0;
    for (unsigned v = value; len == 0 || v; v /= 10)
        digits[len++] = (char)('0' + v % 10);
    vb_strlcpy(out, name, cap);
    vb_strlcat(out, "=", cap);
    size_t at = strlen(out);
    while (len && at + 1 < cap)
        out[at++] = digits[--len];
    out[at] = '\0';
}

__attribute__((noreturn)) static void exec_command(const struct vb_plan *plan)
{
    const char *name = plan->argv[0];
    char *const *argv = (char *const *)plan->argv;
    char *const *envp = (char *const *)plan->envp;
    size_t n_env = 0;
    while (plan->envp[n_env])
        n_env++;
    /* with [net].listen: the plan's environment without any LISTEN_* of its own, plus ours */
    const char *listen_envp[plan->listen_fds > 0 ? n_env + 4 : 1];
    char pid_variable[32], fds_variable[32], names_variable[plan->listen_fdnames ? strlen(plan->listen_fdnames) + 16 : 1];
    if (plan->listen_fds > 0) {
        size_t at = 0;
        for (size_t i = 0; i < n_env; i++)
            if (!has_prefix(plan->envp[i], "LISTEN_PID=") && !has_prefix(plan->envp[i], "LISTEN_FDS=") &&
                !has_prefix(plan->envp[i], "LISTEN_FDNAMES="))
                listen_envp[at++] = plan->envp[i];
        /* systemd's sd_listen_fds() takes the sockets only when LISTEN_PID is its
         * own pid as it sees it (in the sandbox's pid namespace): only the process
         * about to exec can say it */
        format_variable(pid_variable, sizeof pid_variable, "LISTEN_PID", (unsigned)getpid());
        format_variable(fds_variable, sizeof fds_variable, "LISTEN_FDS", (unsigned)plan->listen_fds);
        listen_envp[at++] = pid_variable;
        listen_envp[at++] = fds_variable;
        if (plan->listen_fdnames) {
            vb_strlcpy(names_variable, "LISTEN_FDNAMES=", sizeof names_variable);
            vb_strlcat(names_variable, plan->listen_fdnames, sizeof names_variable);
            listen_envp[at++] = names_variable;
        }
        listen_envp[at] = NULL;
        envp = (char *const *)listen_envp;
    }
    if (strchr(name, '/')) {
        execve(name, argv, envp);
        int err = errno;
        vb_child_fail(err, err == ENOENT ? VB_EXIT_NOTFOUND : VB_EXIT_NOEXEC, "cannot run ", name, NULL);
    }
    int denied = 0;
    char path[PATH_MAX];
    for (const char *dir = plan->path_search; dir;) {
        const char *colon = strchr(dir, ':');
        size_t len = colon ? (size_t)(colon - dir) : strlen(dir);
        if (len == 0) {
            path[0] = '.';
            len = 1;
        } else if (len < sizeof path) {
            memcpy(path, dir, len);
        } else {
            len = 0;
        }
        path[len] = '\0';
        if (len && vb_strlcat(path, "/", sizeof path) == 0 && vb_strlcat(path, name, sizeof path) == 0) {
            execve(path, argv, envp);
            if (errno == EACCES)
                denied = 1;
            else if (errno != ENOENT && errno != ENOTDIR)
                vb_child_fail(errno, VB_EXIT_NOEXEC, "cannot run ", path, NULL);
        }
        dir = colon ? colon + 1 : NULL;
    }
    if (denied)
        vb_child_fail(EACCES, VB_EXIT_NOEXEC, "cannot run ", name, NULL);
    vb_child_fail(0, VB_EXIT_NOTFOUND, name, ": command not found in the sandbox (PATH=",
                  plan->path_search, ")", NULL);
}

__attribute__((noreturn)) static void run_command(const struct vb_plan *plan)
{
    if (child_trace_go >= 0) {
        /* the time view: nothing runs before the init traces this process */
        char go = 0;
        while (read(child_trace_go, &go, 1) < 0 && errno == EINTR)
            ;
        if (go != 'g')
            _exit(VB_EXIT_SETUP);
        close(child_trace_go);
        child_trace_go = -1;
    }
    reset_signals();
    if (child_proc_fd >= 0) { /* the init's */
        close(child_proc_fd);
        child_proc_fd = -1;
    }
    if (setsid() < 0)
        FAIL(errno, "start a new session");
    if (!init_did_fds_and_landlock)
        setup_fds(plan);
    if (chdir(plan->workdir) != 0)
        FAIL(errno, "working directory ", plan->workdir);
    for (size_t i = 0; i < plan->n_rlimits; i++) {
        struct rlimit rl = {plan->rlimits[i].soft, plan->rlimits[i].hard};
        if (setrlimit(plan->rlimits[i].resource, &rl) != 0)
            FAIL(errno, "set a resource limit");
    }
    set_identity(plan);
    if (!init_did_fds_and_landlock)
        vb_apply_landlock(plan);
    drop_capabilities();
#if defined(__x86_64__)
    if (plan->time_view && plan->time_strict && prctl(PR_SET_TSC, PR_TSC_SIGSEGV, 0, 0, 0) != 0)
        FAIL(errno, "time view: make rdtsc trap (PR_SET_TSC)");
#endif
    /* last: it restricts what we may call */
    int listener = vb_apply_seccomp(plan->seccomp_deny_groups, plan->interpose_families, vb_time_traps(plan));
    if (listener >= 0)
        hand_over_listener(listener);
    exec_command(plan);
}

/* The broker (broker.h): forked by the init before the command, it gets the
 * command's view, identity, Landlock domain and capabilities (none), so the
 * calls it performs for the supervisor are exactly what the command could
 * do itself. It is not dumpable (the command cannot read or steer it through
 * /proc) and keeps the seccomp baseline, without notification: its own calls
 * must not wait for the supervisor that waits for it. */
__attribute__((noreturn)) static void run_broker(const struct vb_plan *plan)
{
    reset_signals();
    if (setsid() < 0)
        FAIL(errno, "start the broker's session");
    if (chdir("/") != 0)
        FAIL(errno, "broker: enter the view's root");
    /* what it creates gets the mode the supervisor computed with the caller's own umask */
    umask(0);
    set_identity(plan);
    for (size_t i = 0; i < plan->n_fds; i++)
        close(plan->fds[i].child_fd); /* the command's, placed by the init for Landlock's sake */
    if (child_listener_sock >= 0)
        close(child_listener_sock);
    child_listener_sock = -1;
    if (child_proc_fd >= 0)
        close(child_proc_fd);
    child_proc_fd = -1;
    drop_capabilities();
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); /* after the id change, which resets it */
    vb_apply_seccomp(plan->seccomp_deny_groups, 0, 0);
    close(child_errfd); /* set up: the caller's error pipe no longer waits for us */
    child_errfd = -1;
    vb_broker_run(plan, child_broker_sock);
}

/* Closes every fd but the `n` in `keep` (fewer than MAX_FDS). */
static void close_all_but(const int *keep, size_t n)
{
    int sorted[MAX_FDS + 1];
    for (size_t i = 0; i < n; i++) {
        size_t at = i;
        while (at > 0 && sorted[at - 1] > keep[i]) {
            sorted[at] = sorted[at - 1];
            at--;
        }
        sorted[at] = keep[i];
    }
    int from = 0;
    for (size_t i = 0; i < n; i++) {
        if (sorted[i] > from && syscall(SYS_close_range, from, sorted[i] - 1, 0) != 0)
            FAIL(errno, "close inherited file descriptors");
        if (sorted[i] + 1 > from)
            from = sorted[i] + 1;
    }
    if (syscall(SYS_close_range, from, ~0U, 0) != 0)
        FAIL(errno, "close inherited file descriptors");
}

/* The forwarder of [net].publish (forward.c): forked by the init before the
 * command, in the sandbox's network, with the command's identity, view,
 * Landlock domain and (no) capabilities, not dumpable. It keeps only the
 * listening sockets the caller bound on the host. */
__attribute__((noreturn)) static void run_forwarder(const struct vb_plan *plan)
{
    reset_signals();
    if (setsid() < 0)
        FAIL(errno, "start the forwarder's session");
    if (plan->n_publish >= MAX_FDS)
        FAIL(E2BIG, "too many published ports");
    int keep[MAX_FDS];
    size_t n_keep = 0;
    for (size_t i = 0; i < plan->n_publish; i++)
        keep[n_keep++] = plan->publish[i].host_fd;
    keep[n_keep++] = child_errfd;
    close_all_but(keep, n_keep);
    if (chdir("/") != 0)
        FAIL(errno, "forwarder: enter the view's root");
    set_identity(plan);
    vb_apply_landlock(plan);
    drop_capabilities();
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); /* after the id change, which resets it */
    vb_apply_seccomp(plan->seccomp_deny_groups, 0, 0);
    int rc = vb_forward_setup(plan);
    if (rc < 0)
        FAIL(-rc, "set up the forwarder of [net].publish");
    close(child_errfd); /* set up: the caller's error pipe no longer waits for us */
    child_errfd = -1;
    vb_forward_run(plan, child_counters);
}

static void on_signal(int sig)
{
    (void)sig; /* never runs: the signals stay blocked and are taken by sigwaitinfo */
}

/* What the init reports on the status pipe when the command ends. */
struct status_record {
    int wstatus;
    int wall_expired;
    int broker_lost;
    int left_running;               /* see vb_usage */
    struct rusage children;
};

/* The signals the sandbox's init forwards to the command (SIGCONT also ends a job-control stop). */
static const int forwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT, SIGALRM};
/* Job-control stops: the init stops every process of the sandbox (see supervise_command). */
static const int job_stops[] = {SIGTSTP, SIGTTIN, SIGTTOU};

/* In the init, before the view is built (a procfs may be made only while one is fully
 * visible, as the host's is until then): a procfs of the sandbox's pid namespace, whose
 * listing names every process in it. -1 if none can be made; nothing is counted then. */
static int open_own_proc(void)
{
    int fs = fsopen("proc", FSOPEN_CLOEXEC);
    if (fs < 0)
        return -1;
    int mnt = fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0
                  ? fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
                                                     MOUNT_ATTR_NOEXEC)
                  : -1;
    close(fs);
    if (mnt < 0)
        return -1;
    int dir = openat(mnt, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    close(mnt);
    return dir;
}

/* How many processes of the sandbox are still running, this init and `skip` (the broker, the
 * forwarder: -1 when absent) aside: each process its procfs lists that has not exited (a
 * zombie's pidfd polls readable). -1 without that procfs. Not a thread's or a guess's count:
 * the kernel's list of thread groups, read at that moment. */
static int count_running(const pid_t *skip, size_t n_skip)
{
    /* The sandbox ends now (its processes die with this init, or are killed next): stop them
     * all first, in one call, so that a busy one (a fork bomb) neither changes the list while it
     * is read nor takes the CPU this init needs to read it, sharing its cgroup. */
    kill(-1, SIGSTOP);
    if (child_proc_fd < 0 || lseek(child_proc_fd, 0, SEEK_SET) != 0)
        return -1;
    char buf[4096];
    long n;
    int running = 0;
    while ((n = syscall(SYS_getdents64, child_proc_fd, buf, sizeof buf)) > 0) {
        for (long off = 0; off < n;) {
            const struct dirent64 *d = (const struct dirent64 *)(buf + off);
            off += d->d_reclen;
            long pid = 0;
            const char *c = d->d_name;
            for (; *c >= '0' && *c <= '9' && pid < INT_MAX / 10; c++)
                pid = pid * 10 + (*c - '0');
            if (*c || pid <= 1)
                continue; /* not a process ("self", "sys", ...), or this init */
            int ours = 0;
            for (size_t i = 0; i < n_skip; i++)
                ours |= skip[i] == pid;
            if (ours)
                continue;
            int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
            if (pidfd < 0)
                continue; /* gone meanwhile */
            struct pollfd exited = {pidfd, POLLIN, 0};
            if (poll(&exited, 1, 0) == 0)
                running++;
            close(pidfd);
        }
    }
    return n < 0 ? -1 : running;
}

/* pid 1 of the sandbox: forwards signals, reaps orphans, and reports the
 * command's wait status. When it exits the kernel kills every process left
 * in the pid namespace, so nothing outlives the command. */
/* Reports how the command ended, how many other processes were still running (they
 * die with this init) and what its processes used, then exits. */
__attribute__((noreturn)) static void report(int status_fd, int wstatus, int wall_expired, int broker_lost,
                                             int left_running)
{
    struct status_record record;
    memset(&record, 0, sizeof record);
    record.wstatus = wstatus;
    record.wall_expired = wall_expired;
    record.broker_lost = broker_lost;
    record.left_running = left_running;
    /* what the command's tree used, without this init (a copy of the caller:
     * its memory and set-up time are not the command's) */
    getrusage(RUSAGE_CHILDREN, &record.children);
    ssize_t n = write(status_fd, &record, sizeof record);
    _exit(n == (ssize_t)sizeof record ? 0 : VB_EXIT_SETUP);
}

/* Ends the sandbox before its command did: the wall-time limit passed, or
 * the broker is gone (the supervisor went away, or something killed it) and
 * path calls could no longer be decided. Kills everything in the pid
 * namespace but this init and reaps it all, so the usage counts every process. */
__attribute__((noreturn)) static void end_sandbox(pid_t command, const pid_t *ours, int status_fd,
                                                  int wall_expired, int broker_lost)
{
    const pid_t skip[] = {ours[0], ours[1], command};
    int left_running = count_running(skip, VB_ARRAY_LEN(skip));
    kill(-1, SIGKILL);
    int status, command_status = SIGKILL; /* as if killed, should it be reaped already */
    pid_t pid;
    while ((pid = waitpid(-1, &status, 0)) > 0 || (pid < 0 && errno == EINTR))
        if (pid == command)
            command_status = status;
    report(status_fd, command_status, wall_expired, broker_lost, left_running);
}

/* The next child (or tracee) with news, or 0. With a time view on a machine
 * with more CPUs, it waits awake for up to 50 us first: a program reading the
 * clock in a loop stops again within microseconds, and a wake-up from sleep
 * costs more than that (tens of us in a VM). */
static pid_t next_child(int *status, const struct vb_clock *clock)
{
    if (!clock)
        return waitpid(-1, status, WNOHANG);
    pid_t pid = waitpid(-1, status, WNOHANG | __WALL);
    if (pid != 0 || !clock->spin)
        return pid;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        if ((pid = waitpid(-1, status, WNOHANG | __WALL)) != 0)
            return pid;
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((now.tv_sec - start.tv_sec) * 1000000000L + (now.tv_nsec - start.tv_nsec) < 50000);
    return 0;
}

/* `ours`: the broker and the forwarder (-1 when absent), which serve the sandbox rather
 * than run its command: they are neither counted nor stopped. */
__attribute__((noreturn)) static void supervise_command(pid_t command, const pid_t *ours, int status_fd,
                                                        uint64_t wall_ms, struct vb_clock *clock)
{
    /* Nothing here for the command to inspect: not dumpable, no host fds. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    /* the status pipe at 3, the sandbox's procfs at 4, nothing else */
    int status_high = fcntl(status_fd, F_DUPFD_CLOEXEC, 5);
    int proc_high = child_proc_fd >= 0 ? fcntl(child_proc_fd, F_DUPFD_CLOEXEC, 5) : -1;
    if (status_high < 0 || dup2(status_high, 3) < 0)
        _exit(VB_EXIT_SETUP);
    status_fd = 3;
    child_proc_fd = proc_high >= 0 && dup2(proc_high, 4) == 4 ? 4 : -1;
    syscall(SYS_close_range, 0, 2, 0);
    syscall(SYS_close_range, 5, ~0U, 0);

    sigset_t wait_for;
    sigemptyset(&wait_for);
    sigaddset(&wait_for, SIGCHLD);
    for (size_t i = 0; i < VB_ARRAY_LEN(forwarded); i++)
        sigaddset(&wait_for, forwarded[i]);
    for (size_t i = 0; i < VB_ARRAY_LEN(job_stops); i++)
        sigaddset(&wait_for, job_stops[i]);
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += (time_t)(wall_ms / 1000);
    deadline.tv_nsec += (long)(wall_ms % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    int stopped = 0;                /* a job-control stop is in force, since stopped_at */
    struct timespec stopped_at = {0, 0};
    for (;;) {
        siginfo_t info;
        int sig;
        if (wall_ms && !stopped) {
            struct timespec now, left;
            clock_gettime(CLOCK_MONOTONIC, &now);
            left.tv_sec = deadline.tv_sec - now.tv_sec;
            left.tv_nsec = deadline.tv_nsec - now.tv_nsec;
            if (left.tv_nsec < 0) {
                left.tv_sec--;
                left.tv_nsec += 1000000000;
            }
            if (left.tv_sec < 0)
                end_sandbox(command, ours, status_fd, 1, 0);
            sig = sigtimedwait(&wait_for, &info, &left);
            if (sig < 0 && errno == EAGAIN)
                end_sandbox(command, ours, status_fd, 1, 0);
        } else {
            sig = sigwaitinfo(&wait_for, &info);
        }
        if (sig < 0)
            continue;
        if (sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU) {
            /* The caller is being stopped (Ctrl-Z): stop the sandbox with it. Its processes are
             * in sessions of their own, which the terminal's job control does not reach, and in
             * orphaned process groups, which ignore these three: SIGSTOP, to all at once (a fork
             * under way gets it too). The wall-time limit does not count the time stopped: a
             * stopped sandbox runs nothing, and only the caller's side can stop it so. */
            if (!stopped) {
                stopped = 1;
                if (child_job)
                    atomic_store(&child_job->stopped, 1);
                clock_gettime(CLOCK_MONOTONIC, &stopped_at);
                kill(-1, SIGSTOP);
                for (int i = 0; i < 2; i++)
                    if (ours[i] > 0)
                        kill(ours[i], SIGCONT);
            }
            continue;
        }
        if (sig == SIGCONT && stopped) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            deadline.tv_sec += now.tv_sec - stopped_at.tv_sec;
            deadline.tv_nsec += now.tv_nsec - stopped_at.tv_nsec;
            if (deadline.tv_nsec < 0) {
                deadline.tv_sec--;
                deadline.tv_nsec += 1000000000;
            } else if (deadline.tv_nsec >= 1000000000) {
                deadline.tv_sec++;
                deadline.tv_nsec -= 1000000000;
            }
            stopped = 0;
            if (child_job) { /* in this order: a caller that reads 0 reads the new total */
                atomic_fetch_add(&child_job->held_ns, (int64_t)(now.tv_sec - stopped_at.tv_sec) * 1000000000 +
                                                          (now.tv_nsec - stopped_at.tv_nsec));
                atomic_store(&child_job->stopped, 0);
            }
            kill(-1, SIGCONT);
            continue;
        }
        if (sig != SIGCHLD) {
            kill(command, sig);
            continue;
        }
        int status;
        pid_t pid;
        while ((pid = next_child(&status, clock)) > 0) {
            /* the command's processes are traced */
            if (clock && WIFSTOPPED(status) && vb_time_on_stop(clock, pid, &status) == 0)
                continue;
            if (pid == command)
                report(status_fd, status, 0, 0, count_running(ours, 2));
            if (pid == ours[0]) {
                /* The broker exits when its supervisor lets the sandbox go, which
                 * happens as the command's last process ends: give the command a
                 * moment to finish exiting, so a run that ended on its own is not
                 * reported as killed. Until then its path calls fail (the
                 * supervisor answers EACCES without a broker): nothing is decided
                 * meanwhile. */
                struct timespec grace = {0, 200 * 1000 * 1000};
                sigset_t chld;
                sigemptyset(&chld);
                sigaddset(&chld, SIGCHLD);
                for (int tries = 0; tries < 5; tries++) {
                    if (waitpid(command, &status, WNOHANG) == command)
                        report(status_fd, status, 0, 0, count_running(ours, 2));
                    sigtimedwait(&chld, NULL, &grace);
                }
                end_sandbox(command, ours, status_fd, 0, 1);
            }
        }
    }
}

/* In the init: copies the command's seccomp listener out of it (the command
 * says its number once the filter is on), passes it to the caller, and lets the
 * command go on. If the command failed before, the channel reads EOF and the
 * error pipe already says why. */
static void take_listener(pid_t command, int handoff, int resolver)
{
    int number = -1;
    ssize_t n;
    while ((n = read(handoff, &number, sizeof number)) < 0 && errno == EINTR)
        ;
    if (n != (ssize_t)sizeof number) {
        close(handoff);
        return;
    }
    int pidfd = (int)syscall(SYS_pidfd_open, command, 0);
    int listener = pidfd >= 0 ? (int)syscall(SYS_pidfd_getfd, pidfd, number, 0) : -1;
    if (listener < 0)
        FAIL(errno, "take the seccomp listener from the command");
    close(pidfd);
    send_listener(listener, resolver ? bind_resolver() : -1);
    char ack = 'k';
    if (write(handoff, &ack, 1) != 1)
        FAIL(errno, "let the command go on after its seccomp listener");
    close(handoff);
}

/* The init is a copy of the caller, its command line included, and
 * /proc/PID/cmdline is readable by everyone in the pid namespace, dumpable or
 * not: `viewbox run --rw /home/alice/... -- ...` would be there for the
 * command to read. Overwrites that memory (this process's copy) with a name. */
static void scrub_command_line(void)
{
    char text[2048];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, text, sizeof text - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n <= 0)
        return;
    text[n] = '\0';
    const char *p = strrchr(text, ')');
    if (!p)
        return;
    /* after "pid (comm)" come fields 3 onwards; arg_start and arg_end are 48 and 49 */
    unsigned long values[2] = {0, 0};
    int field = 2;
    for (p++; *p && field < 49; p++) {
        if (*p == ' ') {
            field++;
            if (field == 48 || field == 49) {
                unsigned long v = 0;
                for (const char *d = p + 1; *d >= '0' && *d <= '9'; d++)
                    v = v * 10 + (unsigned long)(*d - '0');
                values[field - 48] = v;
            }
        }
    }
    char *start = (char *)(uintptr_t)values[0], *end = (char *)(uintptr_t)values[1];
    static const char name[] = "viewbox-init";
    if (!start || end <= start + sizeof name)
        return;
    memset(start, 0, (size_t)(end - start));
    memcpy(start, name, sizeof name);
}

__attribute__((noreturn)) static void run_init(const struct vb_plan *plan, int err_w, int status_w, int sync_r,
                                               int listener_sock, int broker_sock, struct vb_clock *clock)
{
    child_errfd = err_w;
    child_listener_sock = listener_sock;
    /* No orphans: if the caller dies, so does the sandbox (and with its init,
     * the whole pid namespace). If it died before this line, the sync pipe
     * reads EOF below. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0)
        FAIL(errno, "set the parent-death signal");
    /* the caller's and this init's only: not the broker's, the forwarder's, the command's */
    if (child_job && madvise(child_job, sizeof *child_job, MADV_DONTFORK) != 0)
        FAIL(errno, "keep the job-control state from the sandbox's processes");
    scrub_command_line();
    char go = 0;
    while (read(sync_r, &go, 1) < 0 && errno == EINTR)
        ;
    if (go != 'g')
        _exit(VB_EXIT_SETUP);
    close(sync_r);

    if (clock)
        vb_time_namespace(clock); /* before the host's /proc is gone */
    child_proc_fd = open_own_proc();
    vb_build_view(plan);
    if (clock)
        vb_time_proc_stat(clock);
    if (plan->hostname && sethostname(plan->hostname, strlen(plan->hostname)) != 0)
        FAIL(errno, "set the hostname ", plan->hostname);
    if (plan->unshare_net)
        loopback_up();
    pid_t ours[2] = {-1, -1}; /* the broker and the forwarder */
    if (plan->n_publish) {
        /* before the broker's setup closes the host's listening sockets in this init */
        ours[1] = raw_fork();
        if (ours[1] < 0)
            FAIL(errno, "fork the forwarder of [net].publish");
        if (ours[1] == 0) {
            close(status_w);
            run_forwarder(plan);
        }
    }

    /* Handlers (not SIG_DFL) make pid 1 receive these signals at all; they
     * stay blocked and are taken synchronously. The command resets both. */
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGCHLD, &sa, NULL);
    for (size_t i = 0; i < VB_ARRAY_LEN(forwarded); i++)
        sigaction(forwarded[i], &sa, NULL);
    for (size_t i = 0; i < VB_ARRAY_LEN(job_stops); i++)
        sigaction(job_stops[i], &sa, NULL);

    pid_t broker = -1;
    if (broker_sock >= 0) {
        /* The broker and the command get one Landlock domain, applied here:
         * Landlock lets a process reach another's /proc/PID/fd (which the
         * broker follows for the command's /proc/self/fd/N) only within its
         * own domain. So the command's fds are placed here first, as the
         * ruleset grants the files handed in from them. The init needs no
         * file access of its own from now on. */
        child_broker_sock = broker_sock;
        child_status_fd = status_w;
        setup_fds(plan);
        status_w = child_status_fd;
        child_status_fd = -1;
        vb_apply_landlock(plan);
        init_did_fds_and_landlock = 1;
        broker = raw_fork();
        if (broker < 0)
            FAIL(errno, "fork the broker");
        if (broker == 0) {
            close(status_w);
            run_broker(plan);
        }
        close(child_broker_sock);
        child_broker_sock = -1;
    }
    int trace_pipe[2] = {-1, -1};
    if (clock && pipe2(trace_pipe, O_CLOEXEC) != 0)
        FAIL(errno, "time view: make a pipe");
    /* the command's channel for its seccomp listener (see hand_over_listener) */
    int handoff[2] = {-1, -1};
    if (child_listener_sock >= 0 && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, handoff) != 0)
        FAIL(errno, "make the channel for the seccomp listener");
    pid_t command = raw_fork();
    if (command < 0)
        FAIL(errno, "fork the command");
    if (command == 0) {
        close(status_w);
        if (clock) {
            close(trace_pipe[1]);
            child_trace_go = trace_pipe[0];
        }
        if (handoff[0] >= 0) {
            close(handoff[0]);
            close(child_listener_sock);
            child_listener_sock = handoff[1];
        }
        run_command(plan);
    }
    /* first the tracer (the command waits for it before doing anything), then
     * the listener (the command hands it over once its filter is in place) */
    if (clock) {
        close(trace_pipe[0]);
        vb_time_trace(command, trace_pipe[1]);
    }
    if (handoff[0] >= 0) {
        close(handoff[1]);
        take_listener(command, handoff[0], plan->resolver);
    }
    ours[0] = broker;
    supervise_command(command, ours, status_w, plan->wall_ms, clock);
}

static int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, text, strlen(text));
    int rc = n == (ssize_t)strlen(text) ? 0 : (n < 0 ? -errno : -EIO);
    close(fd);
    return rc;
}

/* Writes /proc/<pid>/<file> ("uid_map" or "gid_map"): every id as itself, or
 * the one id inside onto the caller's. `path` keeps the file's name for errors. */
static int write_id_map(pid_t pid, const char *file, int all_ids, uint32_t inside, uint32_t outside,
                        char *path, size_t path_cap)
{
    char map[64];
    snprintf(path, path_cap, "/proc/%d/%s", pid, file);
    if (all_ids)
        snprintf(map, sizeof map, "0 0 4294967295");
    else
        snprintf(map, sizeof map, "%u %u 1", inside, outside);
    return write_file(path, map);
}

static int write_id_maps(pid_t pid, const struct vb_plan *plan, struct vb_error *error)
{
    char path[64];
    int rc = 0;
    if (!plan->map_all_ids) {
        /* unprivileged: one id each, and setgroups must be denied first */
        snprintf(path, sizeof path, "/proc/%d/setgroups", pid);
        rc = write_file(path, "deny");
    }
    if (rc == 0)
        rc = write_id_map(pid, "uid_map", plan->map_all_ids, plan->uid, plan->outer_uid, path, sizeof path);
    if (rc == 0)
        rc = write_id_map(pid, "gid_map", plan->map_all_ids, plan->gid, plan->outer_gid, path, sizeof path);
    if (rc != 0) {
        error->err = -rc;
        error->exit_code = VB_EXIT_SETUP;
        snprintf(error->what, sizeof error->what, "write %s", path);
    }
    return rc;
}

/* The listener the command sends before exec (and the resolver's socket, into
 * *resolver, or -1); -errno if it sent none (then the error pipe says why). */
static int receive_listener(int sock, int *resolver)
{
    *resolver = -1;
    char byte;
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(2 * sizeof(int))];
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    ssize_t n;
    while ((n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    struct cmsghdr *cmsg = n == 1 ? CMSG_FIRSTHDR(&msg) : NULL;
    if (!cmsg || cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
        return n < 0 ? -errno : -EPIPE;
    int fds[2] = {-1, -1};
    size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    memcpy(fds, CMSG_DATA(cmsg), (count > 2 ? 2 : count) * sizeof(int));
    *resolver = fds[1];
    return fds[0];
}

static ssize_t read_full(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        got += (size_t)n;
    }
    return (ssize_t)got;
}

static void reap(pid_t pid, int *status, struct rusage *usage)
{
    while (wait4(pid, status, __WALL, usage) < 0 && errno == EINTR)
        ;
}

struct vb_net_counters *vb_net_counters_new(void)
{
    struct vb_net_counters *c = mmap(NULL, sizeof *c, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (c == MAP_FAILED)
        return NULL;
    atomic_store(&c->holders, 1);
    return c;
}

void vb_net_counters_hold(struct vb_net_counters *counters)
{
    atomic_fetch_add(&counters->holders, 1);
}

void vb_net_counters_release(struct vb_net_counters *counters)
{
    if (counters && atomic_fetch_sub(&counters->holders, 1) == 1)
        munmap(counters, sizeof *counters);
}

/* Puts the sandbox's init into each cgroup v1 hierarchy the plan names. */
static int join_cgroups(pid_t pid, const struct vb_plan *plan, struct vb_error *error)
{
    char text[32];
    int len = snprintf(text, sizeof text, "%d", pid);
    for (size_t i = 0; i < plan->n_cgroup_procs_fds; i++) {
        if (pwrite(plan->cgroup_procs_fds[i], text, (size_t)len, 0) != len) {
            error->err = errno ? errno : EIO;
            error->exit_code = VB_EXIT_SETUP;
            snprintf(error->what, sizeof error->what, "move the sandbox into its cgroup");
            return -error->err;
        }
    }
    return 0;
}

static int spawn_counted(const struct vb_plan *plan, struct vb_child *child, struct vb_error *error,
                         struct vb_net_counters *counters, struct vb_clock **clock);

int vb_spawn(const struct vb_plan *plan, struct vb_child *child, struct vb_error *error)
{
    memset(error, 0, sizeof *error);
    /* the time view's clock: the init moves it (frozen), the supervisor answers clock reads from it */
    struct vb_clock *clock = NULL;
    if (plan->time_view) {
        clock = (plan->interpose_families & VB_FAMILY_CLOCK) ? vb_clock_new(plan) : NULL;
        if (!clock) {
            error->err = (plan->interpose_families & VB_FAMILY_CLOCK) ? errno : EINVAL;
            error->exit_code = VB_EXIT_SETUP;
            snprintf(error->what, sizeof error->what, "time view: %s",
                     error->err == EINVAL ? "its clock reads need VB_FAMILY_CLOCK interposed" : "map its clock");
            return -error->err;
        }
    }
    /* the sandbox's own network: what viewbox carries across its edge is counted */
    struct vb_net_counters *counters = NULL;
    if (plan->unshare_net || plan->netns_fd >= 0) {
        counters = vb_net_counters_new();
        if (!counters) {
            int rc = -errno;
            if (clock)
                munmap(clock, sizeof *clock);
            return rc;
        }
    }
    struct vb_job *job = mmap(NULL, sizeof *job, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (job == MAP_FAILED) {
        int rc = -errno;
        vb_net_counters_release(counters);
        if (clock)
            munmap(clock, sizeof *clock);
        return rc;
    }
    child_job = job; /* the init's copy of this static is its own */
    int rc = spawn_counted(plan, child, error, counters, &clock);
    child_job = NULL;
    if (rc == 0) {
        child->net_counters = counters;
        child->job = job;
    } else {
        vb_net_counters_release(counters);
        munmap(job, sizeof *job);
    }
    if (clock) /* not handed to the supervisor */
        munmap(clock, sizeof *clock);
    return rc;
}

/* `*clock`: the time view's, or NULL; set to NULL once the supervisor owns it. */
static int spawn_counted(const struct vb_plan *plan, struct vb_child *child, struct vb_error *error,
                         struct vb_net_counters *counters, struct vb_clock **clock)
{
    memset(error, 0, sizeof *error);
    child->pid = child->pidfd = child->status_fd = child->resolver_fd = -1;
    child->net_counters = NULL;
    child->job = NULL;
    child_counters = counters; /* the init's copy of this static is the forwarder's */
    int resolver = -1;

    if (plan->interpose_families && !plan->supervisor)
        return -EINVAL;
    if (plan->time_view) {
#if !defined(__x86_64__)
        error->err = EOPNOTSUPP;
        error->exit_code = VB_EXIT_SETUP;
        snprintf(error->what, sizeof error->what, "time view: only implemented on x86_64");
        return -EOPNOTSUPP;
#endif
    }
    int err_pipe[2] = {-1, -1}, status_pipe[2] = {-1, -1}, sync_pipe[2] = {-1, -1};
    int listener_socks[2] = {-1, -1}, broker_socks[2] = {-1, -1};
    if (pipe2(err_pipe, O_CLOEXEC) != 0 || pipe2(status_pipe, O_CLOEXEC) != 0 ||
        pipe2(sync_pipe, O_CLOEXEC) != 0 ||
        (plan->interpose_families &&
         socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, listener_socks) != 0) ||
        (plan->n_path_rules &&
         socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, broker_socks) != 0)) {
        int rc = -errno;
        int *all[] = {err_pipe, status_pipe, sync_pipe, listener_socks, broker_socks};
        for (size_t i = 0; i < VB_ARRAY_LEN(all); i++)
            for (int end = 0; end < 2; end++)
                if (all[i][end] >= 0)
                    close(all[i][end]);
        return rc;
    }

    int pidfd = -1;
    struct vb_clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS |
                 CLONE_NEWCGROUP | CLONE_PIDFD;
    if (plan->unshare_net)
        args.flags |= CLONE_NEWNET;
    if (plan->cgroup_fd >= 0) {
        args.flags |= VB_CLONE_INTO_CGROUP;
        args.cgroup = (uint64_t)plan->cgroup_fd;
    }
    args.pidfd = (uint64_t)(uintptr_t)&pidfd;
    args.exit_signal = SIGCHLD;

    /* Mode "private": the caller built the namespace (veth, addresses, routes). It
     * is entered for the clone only: setns moves just this thread, and back. It
     * stays owned by the host's user namespace, so nothing inside may change it. */
    int own_netns = -1;
    if (plan->netns_fd >= 0) {
        own_netns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (own_netns < 0 || setns(plan->netns_fd, CLONE_NEWNET) != 0) {
            int err = errno;
            if (own_netns >= 0)
                close(own_netns);
            int *all[] = {err_pipe, status_pipe, sync_pipe, listener_socks, broker_socks};
            for (size_t i = 0; i < VB_ARRAY_LEN(all); i++)
                for (int end = 0; end < 2; end++)
                    if (all[i][end] >= 0)
                        close(all[i][end]);
            error->err = err;
            error->exit_code = VB_EXIT_SETUP;
            snprintf(error->what, sizeof error->what, "enter the sandbox's private network namespace");
            return -err;
        }
    }
    pid_t pid = (pid_t)syscall(SYS_clone3, &args, sizeof args);
    if (pid != 0 && own_netns >= 0) {
        int clone_err = errno;
        if (setns(own_netns, CLONE_NEWNET) != 0) {
            /* this thread would stay in the sandbox's network: nothing safe is left to do */
            perror("viewbox: return to the caller's network namespace");
            abort();
        }
        close(own_netns);
        errno = clone_err;
    }
    if (pid == 0) {
        if (own_netns >= 0)
            close(own_netns);
        close(err_pipe[0]);
        close(status_pipe[0]);
        close(sync_pipe[1]);
        if (listener_socks[0] >= 0)
            close(listener_socks[0]);
        if (broker_socks[0] >= 0)
            close(broker_socks[0]);
        run_init(plan, err_pipe[1], status_pipe[1], sync_pipe[0], listener_socks[1], broker_socks[1], *clock);
    }
    int clone_errno = errno;
    close(err_pipe[1]);
    close(status_pipe[1]);
    close(sync_pipe[0]);
    if (listener_socks[1] >= 0)
        close(listener_socks[1]);
    if (broker_socks[1] >= 0)
        close(broker_socks[1]);
    if (pid < 0) {
        close(err_pipe[0]);
        close(status_pipe[0]);
        close(sync_pipe[1]);
        if (listener_socks[0] >= 0)
            close(listener_socks[0]);
        if (broker_socks[0] >= 0)
            close(broker_socks[0]);
        error->err = clone_errno;
        error->exit_code = VB_EXIT_SETUP;
        snprintf(error->what, sizeof error->what, "create the sandbox's namespaces (clone3)");
        return -clone_errno;
    }

    int rc = write_id_maps(pid, plan, error);
    if (rc == 0)
        rc = join_cgroups(pid, plan, error);
    /* 'g' lets the child go on; anything else (or EOF) makes it exit */
    ssize_t w = write(sync_pipe[1], rc == 0 ? "g" : "x", 1);
    (void)w;
    close(sync_pipe[1]);

    if (rc == 0 && listener_socks[0] >= 0) {
        /* Served before the exec it may have to answer; no listener means
         * the setup failed, and the error pipe says why. */
        int listener = receive_listener(listener_socks[0], &resolver);
        if (listener >= 0) {
            /* the supervisor takes both: the broker's end is closed with the listener */
            int added = vb_supervisor_add(plan->supervisor, listener, broker_socks[0], plan, counters, *clock);
            broker_socks[0] = -1;
            *clock = NULL;
            if (added < 0) {
                kill(pid, SIGKILL);
                error->err = -added;
                error->exit_code = VB_EXIT_SETUP;
                snprintf(error->what, sizeof error->what, "serve the sandbox's seccomp listener");
                rc = added;
            }
        }
    }
    if (listener_socks[0] >= 0)
        close(listener_socks[0]);
    if (broker_socks[0] >= 0)
        close(broker_socks[0]);
    if (rc == 0) {
        ssize_t n = read_full(err_pipe[0], error, sizeof *error);
        if (n == (ssize_t)sizeof *error)
            rc = -(error->err ? error->err : ECANCELED);
        else if (n != 0)
            rc = n < 0 ? (int)n : -EIO;
    }
    close(err_pipe[0]);
    if (rc != 0) {
        if (resolver >= 0)
            close(resolver);
        int status;
        reap(pid, &status, NULL);
        close(status_pipe[0]);
        if (pidfd >= 0)
            close(pidfd);
        return rc;
    }
    child->pid = pid;
    child->pidfd = pidfd;
    child->status_fd = status_pipe[0];
    child->resolver_fd = resolver;
    return 0;
}

int vb_job_stopped(const struct vb_child *child, int64_t *held_ns)
{
    if (!child->job) {
        *held_ns = 0;
        return 0;
    }
    int stopped = atomic_load(&child->job->stopped); /* first: see supervise_command */
    *held_ns = atomic_load(&child->job->held_ns);
    return stopped;
}

int vb_wait(struct vb_child *child, int *wstatus, struct vb_usage *usage)
{
    struct status_record record;
    int init_status = 0;
    struct rusage init_usage;
    memset(&record, 0, sizeof record);
    ssize_t n = read_full(child->status_fd, &record, sizeof record);
    reap(child->pid, &init_status, &init_usage);
    /* Killed before it reported: the whole init's figures are all there is. */
    const struct rusage ru = n == (ssize_t)sizeof record ? record.children : init_usage;
    usage->user_us = (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec;
    usage->system_us = (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
    usage->max_rss_kib = ru.ru_maxrss;
    usage->in_blocks = ru.ru_inblock;
    usage->out_blocks = ru.ru_oublock;
    usage->wall_expired = n == (ssize_t)sizeof record && record.wall_expired;
    usage->broker_lost = n == (ssize_t)sizeof record && record.broker_lost;
    usage->left_running = n == (ssize_t)sizeof record ? record.left_running : -1;
    /* no report: the init itself died (killed from outside) */
    *wstatus = n == (ssize_t)sizeof record ? record.wstatus : init_status;
    struct vb_net_counters *net = child->net_counters;
    usage->net_connections_in = net ? (int64_t)atomic_load(&net->connections_in) : -1;
    usage->net_connections_out = net ? (int64_t)atomic_load(&net->connections_out) : -1;
    usage->net_bytes_in = net ? (int64_t)atomic_load(&net->bytes_in) : -1;
    usage->net_bytes_out = net ? (int64_t)atomic_load(&net->bytes_out) : -1;
    vb_net_counters_release(net);
    child->net_counters = NULL;
    if (child->job)
        munmap(child->job, sizeof *child->job);
    child->job = NULL;
    close(child->status_fd);
    close(child->pidfd);
    child->status_fd = child->pidfd = -1;
    return 0;
}
