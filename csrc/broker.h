/* The broker protocol: how the supervisor has path calls performed inside
 * the sandbox. Internal to the C core (not bound by cffi).
 *
 * Why a broker: an emulated call must be performed with the sandboxed
 * command's rights, not the supervisor's (which may be host root). The
 * broker is a process the sandbox's init forks before the command: same
 * mount namespace and root (the view), same uid/gid, same Landlock domain,
 * no capabilities, not dumpable, its own seccomp baseline without
 * notification. It resolves each path with the kernel (symlinks, "..",
 * dirfds: whatever the kernel would do for the command), decides on the
 * object it actually reached (its canonical path inside the view, and for
 * hard links its device and inode), and performs the call only when the
 * decision allows it. The supervisor never opens a path on the sandbox's
 * behalf; it copies the arguments once, hands them over, and returns the
 * broker's result to the caller (an fd through SECCOMP_IOCTL_NOTIF_ADDFD).
 *
 * Transport: an AF_UNIX SOCK_SEQPACKET pair, one message per request and per
 * reply. A request carries 0, 1 or 2 fds (SCM_RIGHTS): the directories its
 * relative paths start from (see `dirfds`). A reply to a successful
 * VB_OP_OPEN carries exactly one fd. Requests may be answered out of order
 * (an open of a FIFO waits for its peer in a forked helper), so replies name
 * their request by `token`.
 *
 * On the wire the structs below travel packed (vb_wire_*): the fixed fields,
 * then each string up to its NUL, then (replies) only the bytes of `u` the
 * operation fills. A call's strings are short; the structs hold PATH_MAX for
 * each, and copying 20 KiB through the socket per call cost more than the
 * call itself.
 */
#ifndef VIEWBOX_BROKER_H
#define VIEWBOX_BROKER_H

#include <limits.h>
#include <stdint.h>
#include <sys/stat.h>

#include "viewbox.h"

enum vb_broker_op {
    VB_OP_OPEN = 1,   /* open, openat, openat2, creat: flags = O_* (creat: O_CREAT|O_WRONLY|O_TRUNC),
                         mode, resolve = RESOLVE_* of openat2; reply: the fd */
    VB_OP_STAT,       /* stat, lstat, newfstatat: at_flags; reply: u.st */
    VB_OP_STATX,      /* statx: at_flags, mask; reply: u.stx */
    VB_OP_ACCESS,     /* access, faccessat, faccessat2: mode = R_OK|W_OK|X_OK|F_OK, at_flags */
    VB_OP_READLINK,   /* readlink, readlinkat: size = the caller's buffer size; reply: u.link,
                         result = bytes (not NUL-terminated, at most size) */
    VB_OP_UNLINK,     /* unlink, rmdir, unlinkat: at_flags (AT_REMOVEDIR) */
    VB_OP_MKDIR,      /* mkdir, mkdirat: mode */
    VB_OP_RENAME,     /* rename, renameat, renameat2: path -> path2, flags = RENAME_* */
    VB_OP_LINK,       /* link, linkat: path -> path2, at_flags (AT_SYMLINK_FOLLOW, AT_EMPTY_PATH) */
    VB_OP_SYMLINK,    /* symlink, symlinkat: a link at path2 whose text is path (path is not resolved) */
    VB_OP_TRUNCATE,   /* truncate: size = the new length */
    VB_OP_EXEC,       /* execve, execveat: decide only (the kernel then runs it); at_flags;
                         reply: u.st of the program the file checked runs */
    VB_OP_CONNECT,    /* connect, bind of the caller's socket (the fd attached as path2's):
                         path2 = the sockaddr copied, in hex, size = its length; path = its
                         unix path name ("" for any other address) */
    VB_OP_BIND,       /* as VB_OP_CONNECT; mode = the socket file's (0777 less the caller's umask) */
};

/* dirfds: which of `path` / `path2` start from an attached fd. A path with
 * no attached fd is absolute (resolved from the view's root). With
 * AT_EMPTY_PATH and an empty path, the attached fd is the object itself. */
#define VB_DIRFD_PATH  1
#define VB_DIRFD_PATH2 2

struct vb_broker_request {
    uint64_t token;         /* echoed in the reply */
    int op;                 /* enum vb_broker_op */
    int dirfds;             /* VB_DIRFD_*: fds attached, in this order */
    uint64_t flags;         /* O_* for VB_OP_OPEN, RENAME_* for VB_OP_RENAME */
    uint64_t mode;          /* create mode, or the access(2) mode */
    uint64_t resolve;       /* RESOLVE_* the caller passed to openat2 */
    uint64_t size;          /* readlink buffer size, truncate length */
    uint32_t mask;          /* statx mask */
    int at_flags;           /* AT_* flags of the call */
    char granted[PATH_MAX]; /* non-empty: an ask rule was answered "allow" for this
                               canonical path: treat VB_RULE_ASK on it as allow */
    char path[PATH_MAX];    /* as the caller passed it (/proc/self already rewritten) */
    char path2[PATH_MAX];
};

struct vb_broker_reply {
    uint64_t token;
    int64_t result;         /* >= 0: success (0, or readlink's length; for VB_OP_OPEN the
                               fd is attached), or -errno: what the caller gets */
    int verdict;            /* VB_RULE_*: the decision of the last matching rule (VB_RULE_ALLOW
                               when none matched); 0 when the call failed before a decision
                               (e.g. ENOENT while resolving) */
    int rule;               /* index into plan->path_rules of the deciding rule, or -1 */
    unsigned access;        /* VB_ACCESS_* the call needed of `canonical` */
    char canonical[PATH_MAX]; /* the object decided on, inside the view; "" if none was reached */
    union {
        struct stat st;
        struct statx stx;
        char link[PATH_MAX];
    } u;
};

/* The packed forms (broker.c). pack: fills `wire` (capacity VB_WIRE_MAX),
 * returns its length. unpack: fills the struct from a message of `len` bytes,
 * every string NUL-terminated within it; 0, or -EINVAL for a malformed one. */
#define VB_WIRE_MAX (sizeof(struct vb_broker_request) + sizeof(struct vb_broker_reply))
size_t vb_wire_pack_request(const struct vb_broker_request *req, char *wire);
int vb_wire_unpack_request(const char *wire, size_t len, struct vb_broker_request *req);
size_t vb_wire_pack_reply(const struct vb_broker_reply *rep, int op, char *wire);
int vb_wire_unpack_reply(const char *wire, size_t len, struct vb_broker_reply *rep);

/* broker.c: the broker's loop. Runs in the broker process after spawn.c
 * gave it the command's identity, Landlock domain and seccomp baseline;
 * `sock` is its end of the pair. Scans the writable mounts of the plan for
 * hard links to files the rules restrict, then serves requests until the
 * supervisor's end closes, and exits. */
__attribute__((noreturn)) void vb_broker_run(const struct vb_plan *plan, int sock);

/* broker.c: 1 if `path` (absolute, canonical) matches `glob`. '*' '?' and
 * '[...]' match within one component (never '/'), '**' as a whole component
 * matches any number of components (zero included); '\' escapes. */
int vb_glob_match(const char *glob, const char *path);

#endif
