/* Probes for `viewbox doctor` and the fail-closed checks before a run.
 *
 * Each probe asks the kernel directly, with the same calls the sandbox setup
 * makes, so "available" means "this process may do it now" (kernel config,
 * sysctls, LSMs and any seccomp filter we already run under all count).
 * Children are made with a raw clone() rather than fork(): no atfork handlers
 * run, and the child only makes raw syscalls before _exit(), so probing is
 * safe from a multi-threaded host process.
 */
#include "viewbox.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* The system headers are Linux 6.1's; these are older than that, but keep
 * the file building against older headers too. */
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#endif
#ifndef LANDLOCK_CREATE_RULESET_VERSION
#define LANDLOCK_CREATE_RULESET_VERSION (1U << 0)
#endif
#ifndef SECCOMP_GET_ACTION_AVAIL
#define SECCOMP_GET_ACTION_AVAIL 2
#endif
#ifndef SECCOMP_FILTER_FLAG_NEW_LISTENER
#define SECCOMP_FILTER_FLAG_NEW_LISTENER (1UL << 3)
#endif
#ifndef SECCOMP_RET_USER_NOTIF
#define SECCOMP_RET_USER_NOTIF 0x7fc00000U
#endif

/* A syscall number no architecture uses: the probe filter sends it to the
 * listener, so installing the filter changes nothing the child really calls. */
#define PROBE_UNUSED_NR 0xfffff

/* Forks with a raw clone(); `flags` may add namespaces. Returns the pid in
 * the parent, 0 in the child, -errno on failure. */
static pid_t raw_fork(unsigned long flags)
{
    long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    return pid < 0 ? -errno : (pid_t)pid;
}

/* Reaps `pid`. A child reports success as exit status 0 and failure as the
 * errno of the step that failed; returns 0 or -errno accordingly. */
static int reap(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    if (!WIFEXITED(status))
        return -ECHILD;  /* killed before it could report: no answer */
    return -WEXITSTATUS(status);
}

int vb_probe_clone(unsigned long flags, int with_userns)
{
    if (with_userns)
        flags |= CLONE_NEWUSER;
    /* CLONE_NEWTIME shares its bit with clone()'s exit-signal byte, so
     * clone() cannot take it: the child unshares it instead, which it may
     * do because it holds CAP_SYS_ADMIN in its (new or inherited) user
     * namespace exactly when clone() would have allowed it. */
    unsigned long time_ns = flags & CLONE_NEWTIME;
    pid_t pid = raw_fork(flags & ~time_ns);
    if (pid < 0)
        return pid;
    if (pid == 0) {
        if (time_ns && syscall(SYS_unshare, time_ns) < 0)
            _exit(errno);
        _exit(0);
    }
    return reap(pid);
}

int vb_probe_landlock_abi(void)
{
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    return abi < 0 ? -errno : (int)abi;
}

int vb_probe_seccomp_notify(void)
{
    unsigned int action = SECCOMP_RET_USER_NOTIF;
    if (syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action) < 0)
        return -errno;

    /* Installing a filter is irreversible, so it happens in a child. */
    pid_t pid = raw_fork(0);
    if (pid < 0)
        return pid;
    if (pid == 0) {
        struct sock_filter insns[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PROBE_UNUSED_NR, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = {.len = sizeof(insns) / sizeof(insns[0]), .filter = insns};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
            _exit(errno);
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
                    &prog) < 0)
            _exit(errno);
        _exit(0);
    }
    return reap(pid);
}

int vb_probe_pidfd(void)
{
    long fd = syscall(SYS_pidfd_open, getpid(), 0);
    if (fd < 0)
        return -errno;
    close((int)fd);
    return 0;
}

int vb_probe_trace(int with_userns)
{
    /* As the time view does it: a process in the sandbox's user namespace
     * (its init) seizes its own child. Yama's ptrace_scope 3 forbids that. */
    pid_t pid = raw_fork(with_userns ? CLONE_NEWUSER : 0);
    if (pid < 0)
        return pid;
    if (pid == 0) {
        pid_t child = raw_fork(0);
        if (child < 0)
            _exit(-child);
        if (child == 0) {
            for (;;)
                pause();
        }
        int err = ptrace(PTRACE_SEIZE, child, 0, 0) == 0 ? 0 : errno;
        kill(child, SIGKILL);
        while (waitpid(child, NULL, __WALL) < 0 && errno == EINTR)
            ;
        _exit(err);
    }
    return reap(pid);
}
