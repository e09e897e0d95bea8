/* Shared by the C core's files; not part of the public (cffi) header. */
#ifndef VIEWBOX_INTERNAL_H
#define VIEWBOX_INTERNAL_H

#include <limits.h>
#include <stddef.h>
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
 * `interpose_families` to a supervisor. Returns the listener fd when
 * interposing, else -1. */
int vb_apply_seccomp(uint64_t deny_groups, uint64_t interpose_families);

/* forward.c: relay connections to plan->publish's listeners into the sandbox.
 * Setup (0 or -errno), then the forwarder process's main loop (never returns). */
int vb_forward_setup(const struct vb_plan *plan);
__attribute__((noreturn)) void vb_forward_run(const struct vb_plan *plan);

/* supervisor.c: start serving a sandbox's listener and, with path rules, its
 * broker socket (takes ownership of both, closing them on failure too). Its
 * events go to a duplicate of plan->audit_fd (-1: none). */
int vb_supervisor_add(struct vb_supervisor *sup, int listener, int broker, const struct vb_plan *plan);

#endif
