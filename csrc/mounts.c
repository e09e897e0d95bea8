/* Layer 0: the view. Runs in the sandbox's init, inside its fresh user and
 * mount namespaces, before anything of the command exists.
 *
 * Like bubblewrap: mount a small staging tmpfs, pivot_root into it so the
 * host's tree sits intact at /oldroot, assemble the view at /newroot from
 * the plan's mount operations, then pivot_root into /newroot and detach
 * everything else. Every path is resolved with openat2(RESOLVE_IN_ROOT)
 * against the tree it belongs to, so a symlink in the host tree or in the
 * view can never point a mount outside it. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sched.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define STAGE_CANDIDATES {"/tmp", "/run", "/mnt", "/var/tmp"}
#define MAX_SEAL 1024 /* mounts made read-only once the view is complete */

struct view {
    int stage;         /* O_PATH fd of the staging root (holds /.empty) */
    int host;          /* O_PATH fd of the host's root, at /oldroot */
    int root;          /* O_PATH fd of the view's root, at /newroot */
    int seal[MAX_SEAL];/* tmpfs mounts to turn read-only at the end */
    size_t n_seal;
};

#define FAIL(err, ...) vb_child_fail((err), VB_EXIT_SETUP, __VA_ARGS__, NULL)

static int open_in(int root, const char *path, int flags)
{
    struct open_how how = {
        .flags = (uint64_t)(flags | O_CLOEXEC),
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    int fd = (int)syscall(SYS_openat2, root, path, &how, sizeof how);
    return fd < 0 ? -errno : fd;
}

/* Open `path` inside the view, creating it (and missing parents) as a
 * directory or an empty file when it does not exist yet. */
static int ensure_in_view(struct view *v, const char *path, int as_dir)
{
    int fd = open_in(v->root, path, O_PATH);
    if (fd != -ENOENT)
        return fd;

    char prefix[PATH_MAX];
    size_t len = strlen(path);
    if (len >= sizeof prefix)
        return -ENAMETOOLONG;
    int parent = open_in(v->root, "/", O_PATH | O_DIRECTORY);
    if (parent < 0)
        return parent;
    size_t start = 0;
    while (start < len) {
        while (path[start] == '/')
            start++;
        if (start >= len)
            break;
        size_t end = start;
        while (end < len && path[end] != '/')
            end++;
        memcpy(prefix, path, end);
        prefix[end] = '\0';
        int last = end >= len;
        fd = open_in(v->root, prefix, O_PATH);
        if (fd == -ENOENT) {
            char name[NAME_MAX + 1];
            if (end - start > NAME_MAX) {
                close(parent);
                return -ENAMETOOLONG;
            }
            memcpy(name, path + start, end - start);
            name[end - start] = '\0';
            int rc;
            if (last && !as_dir) {
                rc = openat(parent, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0444);
                if (rc >= 0)
                    close(rc);
            } else {
                rc = mkdirat(parent, name, 0755);
            }
            if (rc < 0 && errno != EEXIST) {
                rc = -errno;
                close(parent);
                return rc;
            }
            fd = open_in(v->root, prefix, O_PATH);
        }
        close(parent);
        if (fd < 0)
            return fd;
        parent = fd;
        start = end;
    }
    return parent;
}

static void attach(int mnt, int target_fd, const char *what, const char *target)
{
    if (move_mount(mnt, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0)
        FAIL(errno, what, target);
}

static void set_attr(int mnt, uint64_t attr, int recursive, const char *target)
{
    struct mount_attr ma = {.attr_set = attr};
    if (mount_setattr(mnt, "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), &ma, sizeof ma) != 0)
        FAIL(errno, "set mount attributes on ", target);
}

/* A fresh filesystem of `type`, configured from "k=v,k=v" options. */
static int new_fs(const char *type, const char *options, uint64_t attr, const char *target)
{
    int fs = fsopen(type, FSOPEN_CLOEXEC);
    if (fs < 0)
        FAIL(errno, "create a ", type, " for ", target);
    char opts[512];
    if (vb_strlcpy(opts, options ? options : "", sizeof opts) < 0)
        FAIL(ENAMETOOLONG, "options for ", target);
    for (char *item = opts; item && *item;) {
        char *next = strchr(item, ',');
        if (next)
            *next++ = '\0';
        char *value = strchr(item, '=');
        int rc;
        if (value) {
            *value++ = '\0';
            rc = fsconfig(fs, FSCONFIG_SET_STRING, item, value, 0);
        } else {
            rc = fsconfig(fs, FSCONFIG_SET_FLAG, item, NULL, 0);
        }
        if (rc != 0)
            FAIL(errno, "option ", item, " of the ", type, " on ", target);
        item = next;
    }
    if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) != 0)
        FAIL(errno, "create the ", type, " for ", target);
    int mnt = fsmount(fs, FSMOUNT_CLOEXEC, (unsigned)attr);
    if (mnt < 0)
        FAIL(errno, "mount the ", type, " on ", target);
    close(fs);
    return mnt;
}

static void seal_later(struct view *v, int mnt, const char *target)
{
    if (v->n_seal >= MAX_SEAL)
        FAIL(E2BIG, "too many mounts in the view, at ", target);
    v->seal[v->n_seal++] = mnt;
}

/* A bind of a host path (resolved within the host's root). */
static void mount_bind(struct view *v, const struct vb_mount *m)
{
    int src = open_in(v->host, m->source, O_PATH);
    if (src < 0) {
        if (src == -ENOENT && (m->flags & VB_MF_OPTIONAL))
            return;
        FAIL(-src, "bind source ", m->source);
    }
    struct stat st;
    if (fstat(src, &st) != 0)
        FAIL(errno, "bind source ", m->source);
    int tree = open_tree(src, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH);
    if (tree < 0)
        FAIL(errno, "bind ", m->source);
    uint64_t attr = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if (m->flags & VB_MF_RDONLY)
        attr |= MOUNT_ATTR_RDONLY;
    set_attr(tree, attr, 1, m->target);
    int dst = ensure_in_view(v, m->target, S_ISDIR(st.st_mode));
    if (dst < 0)
        FAIL(-dst, "create the mount point ", m->target);
    attach(tree, dst, "bind onto ", m->target);
    close(dst);
    close(tree);
    close(src);
}

static void mount_fresh(struct view *v, const struct vb_mount *m, const char *type,
                        const char *options, uint64_t attr, int seal)
{
    int dst = ensure_in_view(v, m->target, 1);
    if (dst < 0)
        FAIL(-dst, "create the mount point ", m->target);
    int mnt = new_fs(type, options, attr, m->target);
    attach(mnt, dst, "mount onto ", m->target);
    close(dst);
    if (seal)
        seal_later(v, mnt, m->target);
    else
        close(mnt);
}

/* Bind one file of the staging root (or of the host) onto `target`. */
static void bind_file(struct view *v, int from_root, const char *from, const char *target)
{
    int src = open_in(from_root, from, O_PATH);
    if (src < 0)
        FAIL(-src, "open ", from, " for ", target);
    int tree = open_tree(src, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
    if (tree < 0)
        FAIL(errno, "bind ", from, " onto ", target);
    /* read-only: placeholders stay empty; device nodes stay writable anyway */
    set_attr(tree, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, target);
    int dst = ensure_in_view(v, target, 0);
    if (dst < 0)
        FAIL(-dst, "create ", target);
    attach(tree, dst, "bind onto ", target);
    close(dst);
    close(tree);
    close(src);
}

static void make_symlink(struct view *v, const char *link_target, const char *dir, const char *name)
{
    int d = open_in(v->root, dir, O_PATH | O_DIRECTORY);
    if (d < 0 || symlinkat(link_target, d, name) != 0)
        FAIL(d < 0 ? -d : errno, "create the symlink ", dir, "/", name);
    close(d);
}

/* A minimal /dev: a tmpfs with the harmless character devices bound from
 * the host, a private devpts, /dev/shm, and the usual symlinks. */
static void mount_dev(struct view *v, const struct vb_mount *m)
{
    static const char *const devices[] = {"null", "zero", "full", "random", "urandom", "tty"};
    static const char *const links[][2] = {
        {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"},
        {"/proc/self/fd/2", "stderr"}, {"pts/ptmx", "ptmx"},
    };
    char path[PATH_MAX], host_path[PATH_MAX];
    /* not nodev: the device nodes are binds with their own mount flags anyway */
    mount_fresh(v, m, "tmpfs", "mode=0755,size=1m", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, 1);
    for (size_t i = 0; i < VB_ARRAY_LEN(devices); i++) {
        if (vb_strlcpy(path, m->target, sizeof path) < 0 || vb_strlcat(path, "/", sizeof path) < 0 ||
            vb_strlcat(path, devices[i], sizeof path) < 0)
            FAIL(ENAMETOOLONG, m->target);
        vb_strlcpy(host_path, "/dev/", sizeof host_path);
        vb_strlcat(host_path, devices[i], sizeof host_path);
        bind_file(v, v->host, host_path, path);
    }
    for (size_t i = 0; i < VB_ARRAY_LEN(links); i++)
        make_symlink(v, links[i][0], m->target, links[i][1]);

    struct vb_mount sub = *m;
    if (vb_strlcpy(path, m->target, sizeof path) < 0 || vb_strlcat(path, "/pts", sizeof path) < 0)
        FAIL(ENAMETOOLONG, m->target);
    sub.target = path;
    mount_fresh(v, &sub, "devpts", "newinstance,ptmxmode=0666,mode=0620",
                MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, 0);
    if (vb_strlcpy(path, m->target, sizeof path) < 0 || vb_strlcat(path, "/shm", sizeof path) < 0)
        FAIL(ENAMETOOLONG, m->target);
    /* the plan sizes /dev/shm (it counts against the sandbox's disk limit) */
    mount_fresh(v, &sub, "tmpfs", m->data ? m->data : "mode=1777,size=64m", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0);
}

static void mount_hide(struct view *v, const struct vb_mount *m)
{
    int fd = open_in(v->root, m->target, O_PATH);
    if (fd == -ENOENT)
        return; /* nothing there to hide */
    if (fd < 0)
        FAIL(-fd, "hide ", m->target);
    struct stat st;
    if (fstat(fd, &st) != 0)
        FAIL(errno, "hide ", m->target);
    close(fd);
    if (S_ISDIR(st.st_mode))
        /* writable until sealed, so that later mounts can make mount points in it */
        mount_fresh(v, m, "tmpfs", "mode=0755,size=16k", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 1);
    else
        bind_file(v, v->stage, "/.empty", m->target);
}

/* A path of the view, bound onto itself read-only (recursively). */
static void make_readonly(struct view *v, const char *path)
{
    int fd = open_in(v->root, path, O_PATH | O_NOFOLLOW);
    if (fd == -ENOENT)
        return;
    if (fd < 0)
        FAIL(-fd, "open ", path);
    int tree = open_tree(fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH);
    if (tree < 0)
        FAIL(errno, "bind ", path, " onto itself");
    set_attr(tree, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, 1, path);
    attach(tree, fd, "bind onto ", path);
    close(tree);
    close(fd);
}

/* A fresh procfs of the sandbox's pid namespace. Some of its files are not
 * namespaced and are guarded by the file's owner only, with no capability
 * check (e.g. kernel.core_pattern): writable by whoever is uid 0 of the
 * host. Those are made read-only, and files that only leak kernel memory or
 * host-wide state are masked, as container runtimes do. */
static void mount_proc(struct view *v, const struct vb_mount *m)
{
    static const char *const readonly[] = {"sys", "sysrq-trigger", "irq", "bus", "fs", "asound"};
    static const char *const masked[] = {"kcore", "keys", "timer_list", "sched_debug", "latency_stats",
                                         "timer_stats", "acpi", "scsi"};
    char path[PATH_MAX];
    mount_fresh(v, m, "proc", NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, 0);
    for (size_t i = 0; i < VB_ARRAY_LEN(readonly); i++) {
        if (vb_strlcpy(path, m->target, sizeof path) < 0 || vb_strlcat(path, "/", sizeof path) < 0 ||
            vb_strlcat(path, readonly[i], sizeof path) < 0)
            FAIL(ENAMETOOLONG, m->target);
        make_readonly(v, path);
    }
    for (size_t i = 0; i < VB_ARRAY_LEN(masked); i++) {
        if (vb_strlcpy(path, m->target, sizeof path) < 0 || vb_strlcat(path, "/", sizeof path) < 0 ||
            vb_strlcat(path, masked[i], sizeof path) < 0)
            FAIL(ENAMETOOLONG, m->target);
        struct vb_mount hide = {VB_MOUNT_HIDE, VB_MF_OPTIONAL, NULL, path, NULL};
        mount_hide(v, &hide);
    }
}

static void apply(struct view *v, const struct vb_mount *m)
{
    uint64_t fresh_attr = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    switch (m->kind) {
    case VB_MOUNT_BIND:
        mount_bind(v, m);
        break;
    case VB_MOUNT_TMPFS:
        mount_fresh(v, m, "tmpfs", m->data, fresh_attr | ((m->flags & VB_MF_RDONLY) ? MOUNT_ATTR_RDONLY : 0), 0);
        break;
    case VB_MOUNT_PROC:
        mount_proc(v, m);
        break;
    case VB_MOUNT_DEV:
        mount_dev(v, m);
        break;
    case VB_MOUNT_HIDE:
        mount_hide(v, m);
        break;
    default:
        FAIL(EINVAL, "unknown mount operation for ", m->target);
    }
}

/* Does a mount operation of the plan replace the top-level entry `name`? */
static int replaced_by_plan(const struct vb_plan *plan, const char *name)
{
    for (size_t i = 0; i < plan->n_mounts; i++) {
        const char *target = plan->mounts[i].target;
        if (target[0] == '/' && strcmp(target + 1, name) == 0)
            return 1;
    }
    return 0;
}

struct vb_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* The host base: the view's root is a tmpfs (so that mount points missing on
 * the host can be made at the top), holding each entry of the host's root,
 * bound read-only with everything mounted beneath it, or copied if a symlink.
 * Entries a mount operation replaces anyway get an empty mount point. */
static void bind_host_entries(struct view *v, const struct vb_plan *plan)
{
    int dir = openat(v->host, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        FAIL(errno, "list the host's root");
    char buf[8192];
    long n;
    while ((n = syscall(SYS_getdents64, dir, buf, sizeof buf)) > 0) {
        for (long off = 0; off < n;) {
            struct vb_dirent64 *d = (struct vb_dirent64 *)(buf + off);
            off += d->d_reclen;
            const char *name = d->d_name;
            if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
                continue;
            struct stat st;
            if (fstatat(v->host, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
                continue; /* gone meanwhile */
            if (S_ISLNK(st.st_mode)) {
                char link[PATH_MAX];
                ssize_t len = readlinkat(v->host, name, link, sizeof link - 1);
                if (len < 0)
                    FAIL(errno, "read the host's symlink /", name);
                link[len] = '\0';
                if (symlinkat(link, v->root, name) != 0)
                    FAIL(errno, "copy the host's symlink /", name);
                continue;
            }
            int is_dir = S_ISDIR(st.st_mode);
            int made = is_dir ? mkdirat(v->root, name, 0755)
                              : openat(v->root, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0444);
            if (made < 0)
                FAIL(errno, "create the mount point /", name);
            if (!is_dir)
                close(made);
            if (replaced_by_plan(plan, name))
                continue;
            int src = openat(v->host, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
            if (src < 0)
                FAIL(errno, "open the host's /", name);
            int tree = open_tree(src, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH);
            if (tree < 0)
                FAIL(errno, "bind the host's /", name);
            set_attr(tree, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 1, name);
            int dst = openat(v->root, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
            if (dst < 0)
                FAIL(errno, "open the mount point /", name);
            attach(tree, dst, "bind onto /", name);
            close(dst);
            close(tree);
            close(src);
        }
    }
    if (n < 0)
        FAIL(errno, "list the host's root");
    close(dir);
}

/* [net].allow by name: the view's /etc/resolv.conf names the sandbox's own
 * resolver (see bind_resolver in spawn.c), and nothing else: no search
 * domains of the host's, no other server a query could leak to. */
static void name_resolver(struct view *v)
{
    static const char text[] = "# viewbox: the sandbox's resolver answers for the names [net].allow names\n"
                               "nameserver 127.0.0.53\n";
    int fd = openat(v->stage, ".resolv.conf", O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0444);
    if (fd < 0 || write(fd, text, sizeof text - 1) != (ssize_t)(sizeof text - 1))
        FAIL(errno, "write the view's /etc/resolv.conf");
    close(fd);
    bind_file(v, v->stage, "/.resolv.conf", "/etc/resolv.conf");
}

/* The view's /etc/hosts, with the sandbox's own hostname first: programs
 * resolve their own name (gethostbyname(gethostname()), `hostname -f`), and
 * the host's /etc/hosts has only the host's. 127.0.1.1, as Debian writes it:
 * in the sandbox's own network that is its own loopback. A view without a
 * readable /etc/hosts gets none, and one larger than HOSTS_MAX (the staging
 * tmpfs holds the copy) is left as it is. */
#define HOSTS_MAX (32 * 1024)

static void name_host(struct view *v, const char *hostname)
{
    static const char head[] = "# viewbox: the sandbox's hostname\n127.0.1.1\t";
    static char text[sizeof head + HOST_NAME_MAX + 1 + HOSTS_MAX];
    size_t name_len = strnlen(hostname, HOST_NAME_MAX);
    memcpy(text, head, sizeof head - 1);
    memcpy(text + sizeof head - 1, hostname, name_len);
    text[sizeof head - 1 + name_len] = '\n';
    size_t n = sizeof head + name_len;
    int fd = open_in(v->root, "/etc/hosts", O_RDONLY);
    if (fd < 0)
        return;
    size_t len = n;
    ssize_t got;
    while ((got = read(fd, text + len, sizeof text - len)) > 0)
        len += (size_t)got;
    if (got < 0)
        FAIL(errno, "read the view's /etc/hosts");
    close(fd);
    if (len > n + HOSTS_MAX)
        return; /* it may not have been read whole */
    fd = openat(v->stage, ".hosts", O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0444);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len)
        FAIL(errno, "write the view's /etc/hosts");
    close(fd);
    bind_file(v, v->stage, "/.hosts", "/etc/hosts");
}

static const char *pick_stage(void)
{
    static const char *const candidates[] = STAGE_CANDIDATES;
    struct stat st;
    for (size_t i = 0; i < VB_ARRAY_LEN(candidates); i++)
        if (stat(candidates[i], &st) == 0 && S_ISDIR(st.st_mode))
            return candidates[i];
    FAIL(ENOENT, "find a directory to stage the view in (/tmp, /run, /mnt or /var/tmp)");
}

void vb_build_view(const struct vb_plan *plan)
{
    struct view v = {.stage = -1, .host = -1, .root = -1};

    /* Nothing we mount may propagate back to the host. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        FAIL(errno, "make the mount namespace private");

    const char *stage = pick_stage();
    if (mount("tmpfs", stage, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k") != 0)
        FAIL(errno, "mount the staging tmpfs on ", stage);
    if (chdir(stage) != 0 || mkdir("newroot", 0755) != 0 || mkdir("oldroot", 0755) != 0)
        FAIL(errno, "prepare the staging directory ", stage);
    int empty = open(".empty", O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0444);
    if (empty < 0)
        FAIL(errno, "create the placeholder for hidden files");
    close(empty);
    if (syscall(SYS_pivot_root, ".", "oldroot") != 0)
        FAIL(errno, "pivot_root into the staging directory");
    if (chdir("/") != 0)
        FAIL(errno, "chdir to the staging root");
    v.stage = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    v.host = open("/oldroot", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (v.stage < 0 || v.host < 0)
        FAIL(errno, "open the host's root");

    /* Both bases start from an empty tmpfs, made read-only once complete. */
    int root_mnt = new_fs("tmpfs", "mode=0755,size=1m", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, "/");
    seal_later(&v, root_mnt, "/");
    if (move_mount(root_mnt, "", AT_FDCWD, "/newroot", MOVE_MOUNT_F_EMPTY_PATH) != 0)
        FAIL(errno, "attach the view's root");
    v.root = open("/newroot", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (v.root < 0)
        FAIL(errno, "open the view's root");
    if (plan->base == VB_BASE_HOST)
        bind_host_entries(&v, plan);

    for (size_t i = 0; i < plan->n_mounts; i++)
        apply(&v, &plan->mounts[i]);
    if (plan->resolver)
        name_resolver(&v);
    if (plan->hostname)
        name_host(&v, plan->hostname);

    for (size_t i = 0; i < v.n_seal; i++) {
        set_attr(v.seal[i], MOUNT_ATTR_RDONLY, 0, "a sealed mount");
        close(v.seal[i]);
    }
    close(v.stage);
    close(v.host);
    close(v.root);

    /* pivot_root(".", ".") stacks the old root on top of the new one; the
     * detach then drops the staging tmpfs and, with it, the host's tree. */
    if (chdir("/newroot") != 0)
        FAIL(errno, "enter the view");
    if (syscall(SYS_pivot_root, ".", ".") != 0)
        FAIL(errno, "pivot_root into the view");
    if (umount2(".", MNT_DETACH) != 0)
        FAIL(errno, "detach the host's root");
    if (chdir("/") != 0)
        FAIL(errno, "chdir to the view's root");
}
