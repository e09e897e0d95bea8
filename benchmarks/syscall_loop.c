/* syscall_loop: the per-call cost of one file system call, for benchmarks/run.py.
 *
 *     syscall_loop MODE CALLS PATH
 *
 * Makes CALLS calls of one kind in a tight loop (after CALLS/10 untimed
 * warm-up calls) and prints the elapsed nanoseconds per call, one number on
 * one line. Only the loop is timed (CLOCK_MONOTONIC), so the start-up of the
 * process, or of the sandbox around it, does not count. MODE:
 *
 *   fstat  fstatat(fd, "", &st, AT_EMPTY_PATH) on an fd open on PATH: the
 *          newfstatat system call glibc's fstat() makes; under viewbox's
 *          per-path rules the supervisor answers it alone (no path to check).
 *   stat   fstatat(AT_FDCWD, PATH, &st, 0): newfstatat on a path, what
 *          stat() makes; under rules it is emulated through the broker.
 *   open   openat(AT_FDCWD, PATH, O_RDONLY|O_CLOEXEC) then close(): one
 *          emulated open (fd injected into the caller) plus a plain close.
 *   notify the fstat loop under a seccomp filter of its own that sends every
 *          newfstatat to a user-notification listener, answered by a
 *          thread of this process with SECCOMP_USER_NOTIF_FLAG_CONTINUE
 *          and nothing else (with SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP where
 *          the kernel has it, Linux 6.6+): the kernel's floor under any
 *          user-notification round trip on this machine. Run natively.
 *   emulate-open, emulate-fstat
 *          the open and fstat loops, each call notified to a thread of this
 *          process that does the least a race-free emulation must: copy the
 *          path once (process_vm_readv), check the notification is still
 *          valid, perform the call itself, and return the result (open: the
 *          fd through SECCOMP_IOCTL_NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SEND;
 *          fstat: the fd taken with pidfd_getfd, the struct stat written
 *          back with process_vm_writev). No rule is looked up and nothing is
 *          resolved with anyone's rights but this process's, and the answering
 *          thread shares the caller's address space (no switch of page
 *          tables), so this is a lower bound on any interposer that decides
 *          by path: what the kernel's mechanism costs here. Both threads run
 *          on one CPU: ADDFD wakes the caller and then the answering thread
 *          without the synchronous wake-up of SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
 *          and on this VM waking an idle vCPU costs tens of µs (viewbox's own
 *          loops poll so that it never waits for one). Run natively.
 *
 * The calls are written as fstatat/openat so that the system call made is the
 * same whatever the glibc version. Any failing call is an error: the program
 * prints it on stderr and exits 1 (a rule matching nothing must not refuse). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS /* Linux 6.6 */
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_ADDFD_FLAG_SEND /* Linux 5.14 */
#define SECCOMP_ADDFD_FLAG_SEND (1UL << 1)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int fail(const char *what, const char *path, long i)
{
    if (i < 0)
        fprintf(stderr, "syscall_loop: %s %s: %s\n", what, path, strerror(errno));
    else
        fprintf(stderr, "syscall_loop: %s %s (call %ld): %s\n", what, path, i, strerror(errno));
    return 1;
}

/* The answering thread of the notify and emulate-* modes. It starts before
 * the filter exists (so that its own calls are not notified) and gets the
 * listener through a pipe. notify: lets every call go on; emulate-*: performs
 * each call itself, the least a race-free emulation must do. */
static int listener_ready[2];

static void emulate(int listener, int pidfd, const char *mode, const struct seccomp_notif *req,
                    struct seccomp_notif_resp *resp)
{
    /* copy the path once: the caller's memory may change after this */
    char path[256];
    struct iovec local = {path, sizeof path - 1}, remote = {(void *)req->data.args[1], sizeof path - 1};
    ssize_t got = process_vm_readv(req->pid, &local, 1, &remote, 1, 0);
    __u64 id = req->id;
    if (got <= 0 || ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) != 0) {
        resp->error = -EFAULT;
        return;
    }
    path[got] = '\0';
    if (strcmp(mode, "emulate-open") == 0) {
        int fd = openat(AT_FDCWD, path, (int)req->data.args[2] & ~O_CLOEXEC);
        if (fd < 0) {
            resp->error = -errno;
            return;
        }
        struct seccomp_notif_addfd addfd = {.id = req->id, .flags = SECCOMP_ADDFD_FLAG_SEND, .srcfd = (__u32)fd,
                                            .newfd_flags = (__u32)(req->data.args[2] & O_CLOEXEC)};
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd) >= 0)
            resp->id = 0; /* answered by the ADDFD */
        else
            resp->error = -errno;
        close(fd);
        return;
    }
    struct stat st;
    int fd = (int)syscall(SYS_pidfd_getfd, pidfd, (int)req->data.args[0], 0);
    if (path[0] != '\0' || fd < 0 || fstat(fd, &st) != 0) {
        resp->error = -EBADF;
    } else {
        struct iovec from = {&st, sizeof st}, to = {(void *)req->data.args[2], sizeof st};
        if (process_vm_writev(req->pid, &from, 1, &to, 1, 0) != (ssize_t)sizeof st)
            resp->error = -EFAULT;
    }
    if (fd >= 0)
        close(fd);
}

static void *serve(void *arg)
{
    const char *mode = arg;
    int listener;
    int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (read(listener_ready[0], &listener, sizeof listener) != sizeof listener || pidfd < 0)
        return NULL;
    for (;;) {
        struct seccomp_notif req;
        struct seccomp_notif_resp resp;
        memset(&req, 0, sizeof req);
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) != 0) {
            if (errno == EINTR || errno == ENOENT)
                continue;
            return NULL;
        }
        memset(&resp, 0, sizeof resp);
        resp.id = req.id;
        if (strcmp(mode, "notify") == 0)
            resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        else
            emulate(listener, pidfd, mode, &req, &resp);
        if (resp.id)
            ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
    }
}

/* Starts the answering thread, then installs on the calling thread only (no
 * TSYNC) a filter notifying openat (emulate-open) or newfstatat. The
 * emulate-* modes first pin the process to its CPU: the thread inherits it. */
static int serve_notifications(const char *mode)
{
    if (strncmp(mode, "emulate-", 8) == 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(sched_getcpu(), &one);
        if (sched_setaffinity(0, sizeof one, &one) != 0)
            return fail("sched_setaffinity", "", -1);
    }
    pthread_t thread;
    if (pipe(listener_ready) != 0)
        return fail("pipe", "", -1);
    if ((errno = pthread_create(&thread, NULL, serve, (void *)mode)) != 0)
        return fail("pthread_create", "", -1);
    int nr = strcmp(mode, "emulate-open") == 0 ? __NR_openat : __NR_newfstatat;
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof filter / sizeof filter[0], filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return fail("prctl(PR_SET_NO_NEW_PRIVS)", "", -1);
    int listener = (int)syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
    if (listener < 0)
        return fail("seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER)", "", -1);
    ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, 0); /* best effort */
    if (write(listener_ready[1], &listener, sizeof listener) != sizeof listener)
        return fail("write", "", -1);
    return 0;
}

static int loop(const char *mode, long calls, const char *path, int fd)
{
    struct stat st;
    if (strcmp(mode, "fstat") == 0 || strcmp(mode, "notify") == 0 || strcmp(mode, "emulate-fstat") == 0) {
        for (long i = 0; i < calls; i++)
            if (fstatat(fd, "", &st, AT_EMPTY_PATH) != 0)
                return fail("fstatat(fd, \"\", AT_EMPTY_PATH) of", path, i);
    } else if (strcmp(mode, "stat") == 0) {
        for (long i = 0; i < calls; i++)
            if (fstatat(AT_FDCWD, path, &st, 0) != 0)
                return fail("fstatat", path, i);
    } else {
        for (long i = 0; i < calls; i++) {
            int f = openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
            if (f < 0)
                return fail("openat", path, i);
            if (close(f) != 0)
                return fail("close of", path, i);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[1], "fstat") && strcmp(argv[1], "stat") && strcmp(argv[1], "open")
                      && strcmp(argv[1], "notify") && strcmp(argv[1], "emulate-open")
                      && strcmp(argv[1], "emulate-fstat"))) {
        fprintf(stderr, "usage: syscall_loop fstat|stat|open|notify|emulate-open|emulate-fstat CALLS PATH\n");
        return 2;
    }
    char *end;
    long calls = strtol(argv[2], &end, 10);
    if (*end || calls < 1) {
        fprintf(stderr, "syscall_loop: CALLS must be a positive number, not %s\n", argv[2]);
        return 2;
    }
    const char *mode = argv[1], *path = argv[3];
    int fd = -1;
    if ((strcmp(mode, "fstat") == 0 || strcmp(mode, "notify") == 0 || strcmp(mode, "emulate-fstat") == 0)
        && (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return fail("open", path, -1);
    if ((strcmp(mode, "notify") == 0 || strncmp(mode, "emulate-", 8) == 0) && serve_notifications(mode) != 0)
        return 1;

    if (loop(mode, calls / 10 + 1, path, fd))
        return 1;
    long long start = now_ns();
    if (loop(mode, calls, path, fd))
        return 1;
    long long elapsed = now_ns() - start;
    printf("%.1f\n", (double)elapsed / (double)calls);
    return 0;
}
