/* The supervisor's parts (supervisor.c: the loop; sys_fs.c: the handlers;
 * audit.c: the events). Internal to the C core. */
#ifndef VIEWBOX_SUPERVISE_H
#define VIEWBOX_SUPERVISE_H

#include <linux/seccomp.h>
#include <stdint.h>

#include "broker.h"
#include "internal.h"

struct served;

#define VB_WAIT_BROKER 1   /* sent to the broker, its reply not yet in */
#define VB_WAIT_ANSWER 2   /* an ask rule holds it until the asking side answers */
#define VB_WAIT_CONNECT 3  /* the supervisor's connect for it is in progress (fds[0]) */

/* One intercepted call, from SECCOMP_IOCTL_NOTIF_RECV to its answer. */
struct vb_call {
    struct served *sandbox;
    struct seccomp_notif notif;              /* the kernel's record (pid, nr, args) */
    const struct vb_interpose_info *row;     /* its row of the syscall table */
    uint64_t token;                          /* names it to the broker and the asker */
    struct vb_broker_request request;        /* the arguments, copied once */
    int fds[2];                              /* dirfds attached to the request, or -1 */
    uint64_t out_addr;                       /* where a result struct goes in the caller */
    int waiting;                             /* VB_WAIT_*: where it is now */
    unsigned asked;                          /* VB_ANSWER_* once an ask was answered, + 1 */
    unsigned asked_access;                   /* what the ask rule held it for */
    int asked_rule;
    int new_fd_flags;                        /* REPLACE_FD: O_CLOEXEC if the caller's fd had it */
    int checked;                             /* the handler wrote a result back: the call was
                                                valid after its last read of the caller */
    struct vb_call *next;
};

/* What a handler decides (DESIGN.md: every handler returns an explicit decision). */
enum vb_decision_kind {
    VB_DECIDE_ERRNO,     /* fail with `value` (an errno) */
    VB_DECIDE_RETURN,    /* succeed, returning `value` */
    VB_DECIDE_BROKER,    /* the request is ready: the broker performs and the rules decide */
    VB_DECIDE_CONTINUE,  /* let the kernel run it as it is: only where layers 0-2 hold the
                            outcome, each use marked SAFETY */
    VB_DECIDE_REPLACE_FD,/* put fds[0] in place of the caller's fd args[0]
                            (ADDFD_FLAG_SETFD), then return `value` (0, or -EINPROGRESS) */
    VB_DECIDE_CONNECTING,/* fds[0] is connecting: once it is done, REPLACE_FD and 0, or
                            fail with its error (a blocking connect, held meanwhile) */
    VB_DECIDE_DENY,      /* refused by the policy: fail with `value`; `rule` says why */
};

struct vb_decision {
    enum vb_decision_kind kind;
    int64_t value;
    const char *rule;    /* the rule that decided (origin), for the audit */
};

typedef struct vb_decision (*vb_handler)(struct vb_call *call);

/* The interposed rows of syscall_table.h (seccomp.c), with their handlers. */
struct vb_interpose_info {
    const char *name;
    int nr;
    uint64_t family;
    const char *args;      /* how to decode each argument, see syscall_table.h */
    const char *note;
    vb_handler handler;    /* sys_<name>, used when the sandbox has path rules */
};
const struct vb_interpose_info *vb_interpose_table(size_t *count);
const struct vb_interpose_info *vb_interpose_row(int nr);

/* The handlers, one per interposed syscall (sys_fs.c, sys_net.c; the time
 * view's clock reads: sys_time.c). */
#define VB_SYSCALL(name, group, how, mask, note)
#define VB_IOCTL(request, name, group, note)
#define VB_INTERPOSE(name, family, args, note) struct vb_decision sys_##name(struct vb_call *call);
#define VB_TIME_CLOCK(name, trap, args, note) struct vb_decision sys_##name(struct vb_call *call);
#define VB_TIME(name, trap, note)
#include "syscall_table.h"
#undef VB_SYSCALL
#undef VB_IOCTL
#undef VB_INTERPOSE
#undef VB_TIME_CLOCK
#undef VB_TIME

/* The calling sandbox's clock (its time view), or NULL without one. */
const struct vb_clock *vb_call_clock(const struct vb_call *call);
/* A stat answer's times on the sandbox's clock when its time view puts files'
 * times there ([time].file_times; sys_time.c); else, or with no clock, as they are.
 * With path rules the supervisor answers the stat family, so it maps them. */
struct stat;
struct statx;
void vb_time_stat(const struct vb_clock *clock, struct stat *st);
void vb_time_statx(const struct vb_clock *clock, struct statx *stx);

/* --- the sandbox's network policy (supervisor.c), for sys_net.c -------- */

/* The [net].allow rule that admits `address` (4 or 16 bytes, network order) and
 * `port`, or NULL. */
const struct vb_net_rule *vb_net_allowed(const struct vb_call *call, int family, const uint8_t *address,
                                         unsigned port);
/* The name a pinned address was resolved from (vb_supervisor_pin), or NULL. */
const char *vb_net_name(const struct vb_call *call, int family, const uint8_t *address);
/* Whether the sandbox has [net].allow rules at all (else connect is not its business). */
int vb_net_filtered(const struct vb_call *call);
/* Whether the sandbox has path rules (its path calls go through its broker). */
int vb_path_rules(const struct vb_call *call);
struct sockaddr_storage;
/* connect, bind (VB_OP_CONNECT, VB_OP_BIND) of the caller's socket `sock` (taken over)
 * under path rules, from `addr`, the one copy of its address (sys_fs.c). */
struct vb_decision vb_socket_request(struct vb_call *call, int op, const struct sockaddr_storage *addr, size_t len,
                                     int sock);
/* A pidfd of the calling thread's process, or -errno. */
int vb_caller_pidfd(const struct vb_call *call);

/* --- tracee access (supervisor.c) --------------------------------------- */

/* Copies the NUL-terminated string at `addr` of the calling thread. 0 or -errno. */
int vb_read_string(const struct vb_call *call, uint64_t addr, char *out, size_t cap);
/* Copies `len` bytes at `addr`. 0 or -errno. */
int vb_read_memory(const struct vb_call *call, uint64_t addr, void *out, size_t len);
/* Whether the call is still waiting for its answer (SECCOMP_IOCTL_NOTIF_ID_VALID):
 * what was read from the caller before is its own. */
int vb_call_valid(const struct vb_call *call);
/* Copies `len` bytes to `addr` in the calling thread, once the call is still valid. */
int vb_write_memory(const struct vb_call *call, uint64_t addr, const void *data, size_t len);
/* The caller's fd `fd` (AT_FDCWD: its working directory, O_PATH), duplicated
 * into this process: the new fd, to be closed after use, or -errno (EBADF for
 * an fd it does not have, ESRCH once it is gone). */
int vb_caller_fd(const struct vb_call *call, int fd);
/* An O_PATH fd, in this process, for the directory a relative path of the
 * call starts from: the caller's working directory (AT_FDCWD) or its fd
 * `dirfd`. -errno (EBADF for an fd it does not have). */
int vb_open_dirfd(const struct vb_call *call, int dirfd);

/* --- audit (audit.c) ----------------------------------------------------- */

/* One JSON line for the call on `audit_fd`: time, pid, syscall, decoded
 * arguments (paths from the call's own copies when it has them), the
 * decision, the rule that made it, the object reached and the result. */
void vb_audit_call(int audit_fd, uint64_t sandbox_id, const struct vb_call *call, const char *decision,
                   const char *rule, const char *resolved, int64_t result);

#endif
