/* Handlers of the filesystem family (VB_FAMILY_FS, VB_FAMILY_EXEC), used
 * when a sandbox has path rules. Each turns the call's copied arguments into
 * a broker request (broker.h): the broker performs it with the command's
 * rights and the rules decide on what it reached. A handler reads nothing
 * from the caller itself: copy_arguments (supervisor.c) copied the paths
 * and the open_how once, before any handler runs. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "supervise.h"

#define ARG(n) (call->notif.data.args[n])

static struct vb_decision decide(enum vb_decision_kind kind, int64_t value)
{
    return (struct vb_decision){kind, value, NULL};
}

#define BROKER decide(VB_DECIDE_BROKER, 0)
#define ERRNO(e) decide(VB_DECIDE_ERRNO, (e))

/* The calling thread's /proc/PID/status, NUL-terminated, into `text`. */
static int read_status(const struct vb_call *call, char *text, size_t cap)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%u/status", call->notif.pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, text, cap - 1);
    close(fd);
    if (n <= 0)
        return -EIO;
    text[n] = '\0';
    return 0;
}

/* The caller's pid and tid inside its pid namespace (the notification names
 * them as this process sees them): the last fields of NStgid / NSpid. */
static int ids_inside(const struct vb_call *call, unsigned *tgid, unsigned *tid)
{
    char text[4096];
    int rc = read_status(call, text, sizeof text);
    if (rc < 0)
        return rc;
    const char *names[2] = {"\nNStgid:", "\nNSpid:"};
    unsigned *out[2] = {tgid, tid};
    for (int i = 0; i < 2; i++) {
        const char *line = strstr(text, names[i]);
        if (!line)
            return -EIO;
        const char *end = strchr(line + 1, '\n');
        const char *last = end ? end : line + strlen(line);
        while (last > line && (last[-1] < '0' || last[-1] > '9'))
            last--;
        const char *first = last;
        while (first > line && first[-1] >= '0' && first[-1] <= '9')
            first--;
        if (first == last)
            return -EIO;
        *out[i] = 0;
        for (const char *c = first; c < last; c++)
            *out[i] = *out[i] * 10 + (unsigned)(*c - '0');
    }
    return 0;
}

/* A path that names the caller itself (/proc/self, /proc/thread-self, and
 * /dev/fd, /dev/stdin… which point there) would name the broker when the
 * broker resolves it: rewritten to the caller's pid inside. Only leading
 * components are seen; a relative path that walks into /proc/self through
 * a dirfd reaches the broker's own (documented in the README). */
static int rewrite_self(const struct vb_call *call, char *path)
{
    static const struct {
        const char *prefix;
        const char *rest; /* appended after /proc/<tgid> ("%t": /task/<tid>) */
        int exact;
    } names[] = {
        {"/proc/self", "", 0},   {"/proc/thread-self", "%t", 0}, {"/dev/fd", "/fd", 0},
        {"/dev/stdin", "/fd/0", 1}, {"/dev/stdout", "/fd/1", 1},     {"/dev/stderr", "/fd/2", 1},
    };
    for (size_t i = 0; i < VB_ARRAY_LEN(names); i++) {
        size_t len = strlen(names[i].prefix);
        if (strncmp(path, names[i].prefix, len) != 0 || (path[len] && (names[i].exact || path[len] != '/')))
            continue;
        unsigned tgid, tid;
        int rc = ids_inside(call, &tgid, &tid);
        if (rc < 0)
            return rc;
        char out[PATH_MAX];
        int n;
        if (strcmp(names[i].rest, "%t") == 0)
            n = snprintf(out, sizeof out, "/proc/%u/task/%u%s", tgid, tid, path + len);
        else
            n = snprintf(out, sizeof out, "/proc/%u%s%s", tgid, names[i].rest, path + len);
        if (n < 0 || n >= PATH_MAX)
            return -ENAMETOOLONG;
        memcpy(path, out, (size_t)n + 1);
        return 0;
    }
    return 0;
}

/* The caller's umask (the broker creates with umask 0): from the Umask:
 * line of its status, read only for calls that create. */
static int apply_umask(struct vb_call *call)
{
    char text[4096];
    int rc = read_status(call, text, sizeof text);
    if (rc < 0)
        return rc;
    const char *line = strstr(text, "\nUmask:");
    if (!line)
        return -EIO;
    unsigned mask = (unsigned)strtoul(line + 7, NULL, 8);
    call->request.mode &= ~(uint64_t)(mask & 0777);
    return 0;
}

/* Readies `which` path of the request (VB_DIRFD_PATH or VB_DIRFD_PATH2): an
 * absolute path resolves from the view's root (the broker's root); a
 * relative or empty one from `dirfd`, opened here from the caller's pid and
 * attached. */
static int prepare_path(struct vb_call *call, int which, int dirfd)
{
    char *path = which == VB_DIRFD_PATH ? call->request.path : call->request.path2;
    if (path[0] == '/')
        return rewrite_self(call, path);
    int fd = vb_open_dirfd(call, dirfd);
    if (fd < 0)
        return fd;
    call->fds[which == VB_DIRFD_PATH ? 0 : 1] = fd;
    call->request.dirfds |= which;
    return 0;
}

static struct vb_decision request(struct vb_call *call, int op, int dirfd)
{
    call->request.op = op;
    int rc = prepare_path(call, VB_DIRFD_PATH, dirfd);
    return rc < 0 ? ERRNO(-rc) : BROKER;
}

static struct vb_decision request2(struct vb_call *call, int op, int dirfd, int dirfd2)
{
    call->request.op = op;
    int rc = prepare_path(call, VB_DIRFD_PATH, dirfd);
    if (rc == 0)
        rc = prepare_path(call, VB_DIRFD_PATH2, dirfd2);
    return rc < 0 ? ERRNO(-rc) : BROKER;
}

/* --- open ----------------------------------------------------------------------- */

#ifndef __O_TMPFILE
#define __O_TMPFILE (O_TMPFILE & ~O_DIRECTORY)
#endif
/* The flags open() and openat() honour (the kernel's VALID_OPEN_FLAGS): the
 * broker opens with openat2, which rejects unknown bits open() ignores. */
#define OPEN_FLAGS (O_ACCMODE | O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_APPEND | O_NONBLOCK | O_DSYNC | \
                    FASYNC | O_DIRECT | O_LARGEFILE | O_DIRECTORY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC | \
                    O_SYNC | O_PATH | __O_TMPFILE)

static struct vb_decision open_call(struct vb_call *call, int dirfd, uint64_t flags, uint64_t mode)
{
    flags &= OPEN_FLAGS;
    int creates = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
    call->request.flags = flags;
    call->request.mode = creates ? mode & 07777 : 0; /* open() ignores the mode otherwise */
    int rc = creates ? apply_umask(call) : 0;
    return rc < 0 ? ERRNO(-rc) : request(call, VB_OP_OPEN, dirfd);
}

/* open(path, flags, mode): opens a file. */
struct vb_decision sys_open(struct vb_call *call)
{
    return open_call(call, AT_FDCWD, ARG(1), ARG(2));
}

/* creat(path, mode): open(path, O_CREAT|O_WRONLY|O_TRUNC, mode). */
struct vb_decision sys_creat(struct vb_call *call)
{
    return open_call(call, AT_FDCWD, O_CREAT | O_WRONLY | O_TRUNC, ARG(1));
}

/* openat(dirfd, path, flags, mode): opens a file. */
struct vb_decision sys_openat(struct vb_call *call)
{
    return open_call(call, (int)ARG(0), ARG(2), ARG(3));
}

/* openat2(dirfd, path, how, size): opens a file; how was copied (and its
 * size checked) with the arguments, and the kernel checks its fields again. */
struct vb_decision sys_openat2(struct vb_call *call)
{
    int creates = (call->request.flags & O_CREAT) || (call->request.flags & O_TMPFILE) == O_TMPFILE;
    int rc = creates ? apply_umask(call) : 0;
    return rc < 0 ? ERRNO(-rc) : request(call, VB_OP_OPEN, (int)ARG(0));
}

/* --- metadata ----------------------------------------------------------------------- */

/* fstat() is fstatat(fd, "", AT_EMPTY_PATH) in today's libc: it names an fd
 * the caller holds, decided when it was opened, so no rule applies. Answered
 * here from the caller's own fd, without a broker round trip. */
static struct vb_decision stat_of_fd(struct vb_call *call, int dirfd, int statx_call, int flags, uint32_t mask)
{
    int fd = vb_caller_fd(call, dirfd);
    if (fd < 0)
        return ERRNO(-fd);
    int rc;
    if (statx_call) {
        struct statx stx;
        rc = statx(fd, "", AT_EMPTY_PATH | (flags & AT_STATX_SYNC_TYPE), mask, &stx) == 0 ? 0 : -errno;
        vb_time_statx(vb_call_clock(call), &stx);
        rc = rc == 0 ? vb_write_memory(call, call->out_addr, &stx, sizeof stx) : rc;
    } else {
        struct stat st;
        rc = fstatat(fd, "", &st, AT_EMPTY_PATH) == 0 ? 0 : -errno;
        vb_time_stat(vb_call_clock(call), &st);
        rc = rc == 0 ? vb_write_memory(call, call->out_addr, &st, sizeof st) : rc;
    }
    close(fd);
    call->checked = rc == 0; /* vb_write_memory checked the call, after every read */
    return rc < 0 ? ERRNO(-rc) : decide(VB_DECIDE_RETURN, 0);
}

/* stat(path, buf): a file's metadata. */
struct vb_decision sys_stat(struct vb_call *call)
{
    call->out_addr = ARG(1);
    return request(call, VB_OP_STAT, AT_FDCWD);
}

/* lstat(path, buf): a file's metadata, the link itself for a symlink. */
struct vb_decision sys_lstat(struct vb_call *call)
{
    call->out_addr = ARG(1);
    call->request.at_flags = AT_SYMLINK_NOFOLLOW;
    return request(call, VB_OP_STAT, AT_FDCWD);
}

/* newfstatat(dirfd, path, buf, flags): a file's metadata. */
struct vb_decision sys_newfstatat(struct vb_call *call)
{
    call->out_addr = ARG(2);
    call->request.at_flags = (int)ARG(3);
    if (!call->request.path[0] && (ARG(3) & AT_EMPTY_PATH))
        return stat_of_fd(call, (int)ARG(0), 0, 0, 0);
    return request(call, VB_OP_STAT, (int)ARG(0));
}

/* statx(dirfd, path, flags, mask, buf): a file's metadata. */
struct vb_decision sys_statx(struct vb_call *call)
{
    call->out_addr = ARG(4);
    call->request.at_flags = (int)ARG(2);
    call->request.mask = (uint32_t)ARG(3);
    if (!call->request.path[0] && (ARG(2) & AT_EMPTY_PATH))
        return stat_of_fd(call, (int)ARG(0), 1, (int)ARG(2), (uint32_t)ARG(3));
    return request(call, VB_OP_STATX, (int)ARG(0));
}

/* access(path, mode): may the caller read / write / run it. */
struct vb_decision sys_access(struct vb_call *call)
{
    call->request.mode = ARG(1);
    return request(call, VB_OP_ACCESS, AT_FDCWD);
}

/* faccessat(dirfd, path, mode): access() from a directory. */
struct vb_decision sys_faccessat(struct vb_call *call)
{
    call->request.mode = ARG(2);
    return request(call, VB_OP_ACCESS, (int)ARG(0));
}

/* faccessat2(dirfd, path, mode, flags): faccessat() with AT_* flags. */
struct vb_decision sys_faccessat2(struct vb_call *call)
{
    call->request.mode = ARG(2);
    call->request.at_flags = (int)ARG(3);
    return request(call, VB_OP_ACCESS, (int)ARG(0));
}

static struct vb_decision readlink_call(struct vb_call *call, int dirfd, uint64_t buf, uint64_t size)
{
    if ((int)size <= 0)
        return ERRNO(EINVAL);
    call->out_addr = buf;
    call->request.size = size;
    return request(call, VB_OP_READLINK, dirfd);
}

/* readlink(path, buf, size): a symlink's text. */
struct vb_decision sys_readlink(struct vb_call *call)
{
    return readlink_call(call, AT_FDCWD, ARG(1), ARG(2));
}

/* readlinkat(dirfd, path, buf, size): readlink() from a directory. */
struct vb_decision sys_readlinkat(struct vb_call *call)
{
    return readlink_call(call, (int)ARG(0), ARG(2), ARG(3));
}

/* --- changes to names ------------------------------------------------------------------ */

/* unlink(path): removes a name. */
struct vb_decision sys_unlink(struct vb_call *call)
{
    return request(call, VB_OP_UNLINK, AT_FDCWD);
}

/* rmdir(path): removes an empty directory. */
struct vb_decision sys_rmdir(struct vb_call *call)
{
    call->request.at_flags = AT_REMOVEDIR;
    return request(call, VB_OP_UNLINK, AT_FDCWD);
}

/* unlinkat(dirfd, path, flags): unlink() or, with AT_REMOVEDIR, rmdir(). */
struct vb_decision sys_unlinkat(struct vb_call *call)
{
    if (ARG(2) & ~(uint64_t)AT_REMOVEDIR)
        return ERRNO(EINVAL);
    call->request.at_flags = (int)ARG(2);
    return request(call, VB_OP_UNLINK, (int)ARG(0));
}

/* mkdir(path, mode): creates a directory. */
struct vb_decision sys_mkdir(struct vb_call *call)
{
    call->request.mode = ARG(1) & 07777;
    int rc = apply_umask(call);
    return rc < 0 ? ERRNO(-rc) : request(call, VB_OP_MKDIR, AT_FDCWD);
}

/* mkdirat(dirfd, path, mode): mkdir() from a directory. */
struct vb_decision sys_mkdirat(struct vb_call *call)
{
    call->request.mode = ARG(2) & 07777;
    int rc = apply_umask(call);
    return rc < 0 ? ERRNO(-rc) : request(call, VB_OP_MKDIR, (int)ARG(0));
}

/* rename(old, new): moves a name. */
struct vb_decision sys_rename(struct vb_call *call)
{
    return request2(call, VB_OP_RENAME, AT_FDCWD, AT_FDCWD);
}

#ifdef __NR_renameat
/* renameat(olddirfd, old, newdirfd, new): rename() from directories. */
struct vb_decision sys_renameat(struct vb_call *call)
{
    return request2(call, VB_OP_RENAME, (int)ARG(0), (int)ARG(2));
}
#endif

/* renameat2(olddirfd, old, newdirfd, new, flags): renameat() with RENAME_* flags. */
struct vb_decision sys_renameat2(struct vb_call *call)
{
    call->request.flags = (uint32_t)ARG(4);
    return request2(call, VB_OP_RENAME, (int)ARG(0), (int)ARG(2));
}

/* link(old, new): a new name for a file. */
struct vb_decision sys_link(struct vb_call *call)
{
    return request2(call, VB_OP_LINK, AT_FDCWD, AT_FDCWD);
}

/* linkat(olddirfd, old, newdirfd, new, flags): link() from directories. */
struct vb_decision sys_linkat(struct vb_call *call)
{
    if (ARG(4) & ~(uint64_t)(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH))
        return ERRNO(EINVAL);
    call->request.at_flags = (int)ARG(4);
    return request2(call, VB_OP_LINK, (int)ARG(0), (int)ARG(2));
}

/* symlink(target, path): a symlink at path; its text is never resolved here. */
struct vb_decision sys_symlink(struct vb_call *call)
{
    call->request.op = VB_OP_SYMLINK;
    int rc = prepare_path(call, VB_DIRFD_PATH2, AT_FDCWD);
    return rc < 0 ? ERRNO(-rc) : BROKER;
}

/* symlinkat(target, dirfd, path): symlink() from a directory. */
struct vb_decision sys_symlinkat(struct vb_call *call)
{
    call->request.op = VB_OP_SYMLINK;
    int rc = prepare_path(call, VB_DIRFD_PATH2, (int)ARG(1));
    return rc < 0 ? ERRNO(-rc) : BROKER;
}

/* truncate(path, length): sets a file's length. */
struct vb_decision sys_truncate(struct vb_call *call)
{
    if ((int64_t)ARG(1) < 0)
        return ERRNO(EINVAL);
    call->request.size = ARG(1);
    return request(call, VB_OP_TRUNCATE, AT_FDCWD);
}

/* chdir(path): changes the working directory.
 * SAFETY: a working directory grants nothing: every later path call made
 * from it is emulated and decided on what it reaches, and the kernel checks
 * search permission and Landlock as for the command. */
struct vb_decision sys_chdir(struct vb_call *call)
{
    return decide(VB_DECIDE_CONTINUE, 0);
}

/* --- sockets ---------------------------------------------------------------------------- */

/* The broker performs the call on the caller's socket (the same open file
 * description), from this one copy of the address, so no rewrite of the
 * caller's memory changes what it reaches. A unix path name is decided by the
 * rules first: a connect as a write of the socket file (the kernel checks
 * write permission on it), a bind as a name created. Other addresses (an
 * abstract or unnamed unix one, Landlock scopes abstract sockets; another
 * family's) have nothing to decide. */
struct vb_decision vb_socket_request(struct vb_call *call, int op, const struct sockaddr_storage *storage,
                                     size_t len, int sock)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *bytes = (const unsigned char *)storage;
    const struct sockaddr_un *addr = (const struct sockaddr_un *)storage;
    call->request.op = op;
    call->fds[1] = sock;
    call->request.dirfds |= VB_DIRFD_PATH2;
    call->request.size = len;
    for (size_t i = 0; i < len; i++) {
        call->request.path2[2 * i] = digits[bytes[i] >> 4];
        call->request.path2[2 * i + 1] = digits[bytes[i] & 15];
    }
    call->request.path2[2 * len] = '\0';
    size_t at = offsetof(struct sockaddr_un, sun_path);
    if (addr->sun_family != AF_UNIX || len <= at || addr->sun_path[0] == '\0') {
        call->request.path[0] = '\0';
        return BROKER;
    }
    size_t n = strnlen(addr->sun_path, len - at);
    memcpy(call->request.path, addr->sun_path, n);
    call->request.path[n] = '\0';
    int rc = 0;
    if (op == VB_OP_BIND) {
        call->request.mode = 0777;
        rc = apply_umask(call);
    }
    if (rc == 0)
        rc = prepare_path(call, VB_DIRFD_PATH, AT_FDCWD);
    return rc < 0 ? ERRNO(-rc) : BROKER;
}

/* --- exec ------------------------------------------------------------------------------ */

/* execve(path, argv, envp): decided by exec rules, then run by the kernel
 * (see the SAFETY note on VB_OP_EXEC in supervisor.c). */
struct vb_decision sys_execve(struct vb_call *call)
{
    return request(call, VB_OP_EXEC, AT_FDCWD);
}

/* execveat(dirfd, path, argv, envp, flags): execve() from a directory or an fd. */
struct vb_decision sys_execveat(struct vb_call *call)
{
    call->request.at_flags = (int)ARG(4);
    return request(call, VB_OP_EXEC, (int)ARG(0));
}
