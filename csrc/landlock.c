/* Layer 1: Landlock, applied inside the view right before the seccomp filter.
 * The plan says which rights are handled and which paths get which rights;
 * this file only translates that into the kernel's ruleset. */
#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* Newer than the Linux 6.1 headers. */
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15)
#endif

/* The ruleset attributes as of ABI 6 (the kernel accepts a shorter struct
 * from older callers, and we pass the size that matches the ABI). */
struct vb_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
};

/* Rights that make sense on a non-directory; the kernel rejects others. */
#define VB_FILE_RIGHTS (LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | \
                        LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_TRUNCATE | \
                        LANDLOCK_ACCESS_FS_IOCTL_DEV)

void vb_apply_landlock(const struct vb_plan *plan)
{
    if (plan->landlock_abi < 1)
        return;
    struct vb_ruleset_attr attr = {
        .handled_access_fs = plan->landlock_handled_fs,
        .scoped = plan->landlock_abi >= 6 ? plan->landlock_scopes : 0,
    };
    /* ABI 1-3 know handled_access_fs, 4-5 add handled_access_net, 6 adds scoped */
    size_t attr_size = plan->landlock_abi >= 6 ? 3 * sizeof(uint64_t)
                     : plan->landlock_abi >= 4 ? 2 * sizeof(uint64_t) : sizeof(uint64_t);

    int ruleset = (int)syscall(__NR_landlock_create_ruleset, &attr, attr_size, 0);
    if (ruleset < 0)
        vb_child_fail(errno, VB_EXIT_SETUP, "create the Landlock ruleset", NULL);

    for (size_t i = 0; i < plan->n_landlock_rules; i++) {
        const struct vb_landlock_rule *rule = &plan->landlock_rules[i];
        int fd = open(rule->path, O_PATH | O_CLOEXEC);
        if (fd < 0) {
            /* A missing path only means less access: nothing to grant. */
            if (errno == ENOENT)
                continue;
            vb_child_fail(errno, VB_EXIT_SETUP, "open ", rule->path, " for a Landlock rule", NULL);
        }
        struct stat st;
        if (fstat(fd, &st) != 0)
            vb_child_fail(errno, VB_EXIT_SETUP, "stat ", rule->path, " for a Landlock rule", NULL);
        uint64_t access = rule->access & plan->landlock_handled_fs;
        if (!S_ISDIR(st.st_mode))
            access &= VB_FILE_RIGHTS;
        if (access) {
            struct landlock_path_beneath_attr beneath = {.allowed_access = access, .parent_fd = fd};
            if (syscall(__NR_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &beneath, 0) != 0)
                vb_child_fail(errno, VB_EXIT_SETUP, "add the Landlock rule for ", rule->path, NULL);
        }
        close(fd);
    }

    /* The files handed in (stdio, passed fds) may live outside the view, and
     * programs reopen them by path (`> /dev/stderr` is /proc/self/fd/2).
     * Each gets a rule for itself alone, with the access it was opened
     * with, so reopening grants nothing the descriptor did not. Pipes and
     * sockets have no path and need no rule. */
    for (size_t i = 0; i < plan->n_fds; i++) {
        int fd = plan->fds[i].child_fd;
        struct stat st;
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fstat(fd, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISCHR(st.st_mode)))
            continue;
        uint64_t access = 0;
        if ((flags & O_ACCMODE) != O_WRONLY)
            access |= LANDLOCK_ACCESS_FS_READ_FILE;
        if ((flags & O_ACCMODE) != O_RDONLY) /* ftruncate() works on it already */
            access |= LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_TRUNCATE;
        if (S_ISCHR(st.st_mode))
            access |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
        access &= plan->landlock_handled_fs;
        struct landlock_path_beneath_attr beneath = {.allowed_access = access, .parent_fd = fd};
        if (access && syscall(__NR_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &beneath, 0) != 0 &&
            errno != EBADFD) /* a file of an internal filesystem: nothing to reopen */
            vb_child_fail(errno, VB_EXIT_SETUP, "add the Landlock rule for a passed file descriptor", NULL);
    }

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        vb_child_fail(errno, VB_EXIT_SETUP, "set no_new_privs", NULL);
    if (syscall(__NR_landlock_restrict_self, ruleset, 0) != 0)
        vb_child_fail(errno, VB_EXIT_SETUP, "enforce the Landlock ruleset", NULL);
    close(ruleset);
}
