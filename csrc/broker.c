/* The broker (broker.h): performs the sandbox's path calls for the
 * supervisor with the command's rights, and decides each one on the object
 * the kernel actually reached, not on the path the command wrote.
 *
 *   supervisor ── request (+ dirfds) ──▶ broker: openat2(O_PATH) as the command would
 *                                        canonical path = readlink(/proc/self/fd/N)
 *                                        rules (+ the inode set for hard links)
 *                                        perform only when allowed
 *   supervisor ◀── reply (+ the fd) ───── result, verdict, rule, canonical
 *
 * The broker is a raw fork of a possibly multi-threaded Python process, like
 * the rest of the child side: no malloc, no stdio, no locks. Buffers live on
 * the stack or in static storage (each process has its own copy); memory that
 * must grow (the inode set, the stack of a directory walk) comes from mmap. */
#include <dirent.h> /* DT_* only: opendir and co. allocate */
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "broker.h"
#include "internal.h"

#ifndef __NR_faccessat2
#define __NR_faccessat2 439
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

#define ACCESS_ALL (VB_ACCESS_READ | VB_ACCESS_WRITE | VB_ACCESS_EXEC)
#define N_BITS 3                  /* READ, WRITE, EXEC: bit b is (1 << b) */
#define MOVE_WALK_LIMIT 100000    /* entries a directory rename may check before it fails closed */
#define MAX_OWN_PROC 8            /* procfs mounts whose view of the broker itself is refused */
#define SELF_FD_PATH_LEN 32

/* --- globs ----------------------------------------------------------------
 * Paths are matched component by component, so '*', '?' and '[...]' can never
 * cross a '/'. A component that is exactly "**" matches any number of whole
 * components, none included. A leading '.' is matched by '*' and '?' like any
 * other character: the rules name canonical paths, and a deny rule that
 * silently skipped dotfiles would be a hole (a star on a home directory
 * must cover .ssh).
 * '\' escapes the next character; a '\' ending a component matches itself.
 * The pattern is split at every '/', so an escaped '/' can match nothing.
 * Both matchers are iterative with a single backtrack point (the last star),
 * which is enough for stars that match any sequence: O(len(glob) * len(path))
 * at worst, no recursion on hostile paths. */

/* "[...]" at p against c: 1 or 0 and its length, or -1 when it is not
 * closed (the '[' is then an ordinary character). */
static int match_bracket(const char *p, const char *pe, unsigned char c, size_t *len)
{
    const char *q = p + 1;
    int negate = 0;
    if (q < pe && (*q == '!' || *q == '^')) {
        negate = 1;
        q++;
    }
    const char *first = q;
    int found = 0;
    while (q < pe && (*q != ']' || q == first)) { /* a ']' first is a member */
        unsigned char lo, hi;
        if (*q == '\\' && q + 1 < pe) {
            lo = (unsigned char)q[1];
            q += 2;
        } else {
            lo = (unsigned char)*q++;
        }
        hi = lo;
        if (q + 1 < pe && *q == '-' && q[1] != ']') {
            q++;
            if (*q == '\\' && q + 1 < pe) {
                hi = (unsigned char)q[1];
                q += 2;
            } else {
                hi = (unsigned char)*q++;
            }
        }
        if (c >= lo && c <= hi)
            found = 1;
    }
    if (q >= pe)
        return -1;
    *len = (size_t)(q + 1 - p);
    return found != negate;
}

/* One pattern atom at p ('?', "[...]", "\c" or a character) against c. */
static int match_atom(const char *p, const char *pe, unsigned char c, size_t *len)
{
    if (*p == '?') {
        *len = 1;
        return 1;
    }
    if (*p == '\\') {
        if (p + 1 < pe) {
            *len = 2;
            return (unsigned char)p[1] == c;
        }
        *len = 1;
        return c == '\\';
    }
    if (*p == '[') {
        int r = match_bracket(p, pe, c, len);
        if (r >= 0)
            return r;
    }
    *len = 1;
    return (unsigned char)*p == c;
}

/* One pattern component [p, pe) against one path component [s, se). */
static int match_component(const char *p, const char *pe, const char *s, const char *se)
{
    const char *star_p = NULL, *star_s = NULL;
    while (s < se) {
        if (p < pe && *p == '*') {
            while (p < pe && *p == '*')
                p++;
            star_p = p;
            star_s = s;
            continue;
        }
        size_t len;
        if (p < pe && match_atom(p, pe, (unsigned char)*s, &len)) {
            p += len;
            s++;
            continue;
        }
        if (!star_p)
            return 0;
        p = star_p; /* the last star takes one more character */
        s = ++star_s;
    }
    while (p < pe && *p == '*')
        p++;
    return p == pe;
}

/* The next component at *cursor (slashes skipped): [*start, *end), 0 at the end. */
static int next_component(const char **cursor, const char **start, const char **end)
{
    const char *p = *cursor;
    while (*p == '/')
        p++;
    if (!*p) {
        *cursor = p;
        return 0;
    }
    *start = p;
    while (*p && *p != '/')
        p++;
    *end = *cursor = p;
    return 1;
}

static int is_globstar(const char *start, const char *end)
{
    return end - start == 2 && start[0] == '*' && start[1] == '*';
}

int vb_glob_match(const char *glob, const char *path)
{
    /* Relative names (a pipe's "pipe:[12]") are not paths: no rule names them. */
    if (!glob || !path || glob[0] != '/' || path[0] != '/')
        return 0;
    const char *g = glob, *s = path;
    const char *star_g = NULL, *star_s = NULL; /* after the last "**", and where it stopped */
    for (;;) {
        const char *g_next = g, *s_next = s, *gs = NULL, *ge = NULL, *ss = NULL, *se = NULL;
        int have_g = next_component(&g_next, &gs, &ge);
        if (!next_component(&s_next, &ss, &se)) {
            /* the path is used up: only "**" may remain (they match nothing) */
            while (have_g && is_globstar(gs, ge))
                have_g = next_component(&g_next, &gs, &ge);
            return !have_g;
        }
        if (have_g && is_globstar(gs, ge)) {
            star_g = g = g_next;
            star_s = s;
            continue;
        }
        if (have_g && match_component(gs, ge, ss, se)) {
            g = g_next;
            s = s_next;
            continue;
        }
        if (!star_g)
            return 0;
        /* the last "**" takes one more component */
        const char *skip, *skip_end;
        next_component(&star_s, &skip, &skip_end);
        g = star_g;
        s = star_s;
    }
}

/* --- state ------------------------------------------------------------- */

static const struct vb_path_rule *rules;
static size_t n_rules;
static int has_restricting_rules; /* any DENY or ASK rule: else nothing is ever restricted */
static int broker_sock = -1;
/* The broker's /proc/self/fd, opened once: readlinkat/openat of "N" in it
 * skip the walk through /proc and "self" that "/proc/self/fd/N" costs on
 * every call (about 1 us each on the hot path). -1: use the full path (a
 * FIFO helper must, as this one names the broker's fd table, not its own). */
static int self_fd_dir = -1;
static dev_t sock_dev;            /* the socket to the supervisor, which the command must */
static ino_t sock_ino;            /* never get hold of (see verify_magic) */

/* The broker's own directories in the procfs mounts it can see ("/proc/17").
 * Opened by the broker for itself, /proc/PID/mem, environ, maps... pass the
 * kernel's same-process check (ptrace_may_access allows a process itself),
 * and the broker is a copy of the host's Python process: its memory holds
 * the host application's secrets. The command cannot read them (the broker
 * is not dumpable), and the broker must not do it for it. */
static char own_proc[MAX_OWN_PROC][PATH_MAX];
static size_t own_proc_len[MAX_OWN_PROC];
static size_t n_own_proc;

/* One request and its reply at a time; a FIFO helper gets its own copy. */
static struct vb_broker_request req;
static struct vb_broker_reply rep;

/* --- growable memory, from mmap ---------------------------------------- */

struct arena {
    char *base;
    size_t len, cap;
};

static int arena_reserve(struct arena *a, size_t more)
{
    if (a->len + more <= a->cap)
        return 0;
    size_t cap = a->cap ? a->cap : 65536;
    while (cap < a->len + more)
        cap *= 2;
    void *p = a->base ? mremap(a->base, a->cap, cap, MREMAP_MAYMOVE)
                      : mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -ENOMEM;
    a->base = p;
    a->cap = cap;
    return 0;
}

/* --- the inode set: hard links -----------------------------------------
 * A file's other names escape the globs that restrict one of its names. The
 * set holds (device, inode) of regular files with more than one name of which
 * one is restricted, with the deciding rule per access bit; a decision on any
 * name of such a file applies those rules too. Open addressing in mmap'd
 * memory, doubled at half load. */

struct inode_entry {
    uint64_t dev, ino;
    int32_t rule[N_BITS]; /* restricting rule per bit, or -1 */
    int32_t used;
};

static struct {
    struct inode_entry *slots;
    size_t cap, count;
    int lost; /* an insert failed (no memory): every multi-name file is refused */
} inodes;

static size_t inode_hash(uint64_t dev, uint64_t ino)
{
    uint64_t h = (ino ^ (dev * 0x9E3779B97F4A7C15ULL)) * 0xBF58476D1CE4E5B9ULL;
    return (size_t)(h ^ (h >> 31));
}

static struct inode_entry *inode_slot(struct inode_entry *slots, size_t cap, uint64_t dev, uint64_t ino)
{
    size_t i = inode_hash(dev, ino) & (cap - 1);
    while (slots[i].used && !(slots[i].dev == dev && slots[i].ino == ino))
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

static const struct inode_entry *inode_lookup(uint64_t dev, uint64_t ino)
{
    if (!inodes.count)
        return NULL;
    struct inode_entry *e = inode_slot(inodes.slots, inodes.cap, dev, ino);
    return e->used ? e : NULL;
}

static int inode_grow(void)
{
    size_t cap = inodes.cap ? inodes.cap * 2 : 1024;
    struct inode_entry *slots = mmap(NULL, cap * sizeof *slots, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (slots == MAP_FAILED)
        return -ENOMEM;
    for (size_t i = 0; i < inodes.cap; i++)
        if (inodes.slots[i].used)
            *inode_slot(slots, cap, inodes.slots[i].dev, inodes.slots[i].ino) = inodes.slots[i];
    if (inodes.slots)
        munmap(inodes.slots, inodes.cap * sizeof *slots);
    inodes.slots = slots;
    inodes.cap = cap;
    return 0;
}

/* --- rules -------------------------------------------------------------- */

/* Per access bit: the action of the last rule that matches and covers the
 * bit (VB_RULE_ALLOW when none does), and that rule's index (or -1). */
struct verdicts {
    int action[N_BITS];
    int rule[N_BITS];
};

static int rank(int action)
{
    return action == VB_RULE_ALLOW ? 0 : action == VB_RULE_ASK ? 1 : 2;
}

static int rule_action(int i)
{
    /* an action this code does not know is a deny: fail closed */
    int a = rules[i].action;
    return a == VB_RULE_ALLOW || a == VB_RULE_ASK ? a : VB_RULE_DENY;
}

/* From the last rule back, so each bit is settled by its first match. */
static void path_verdicts(const char *canonical, unsigned bits, struct verdicts *v)
{
    for (int b = 0; b < N_BITS; b++) {
        v->action[b] = VB_RULE_ALLOW;
        v->rule[b] = -1;
    }
    unsigned open = bits & ACCESS_ALL;
    for (size_t i = n_rules; i-- > 0 && open;) {
        unsigned hit = rules[i].access & open;
        if (!hit || !vb_glob_match(rules[i].glob, canonical))
            continue;
        for (int b = 0; b < N_BITS; b++)
            if (hit & (1u << b)) {
                v->action[b] = rule_action((int)i);
                v->rule[b] = (int)i;
            }
        open &= ~hit;
    }
}

static int is_restricted(const struct verdicts *v, unsigned bits)
{
    for (int b = 0; b < N_BITS; b++)
        if ((bits & (1u << b)) && v->action[b] != VB_RULE_ALLOW)
            return 1;
    return 0;
}

/* The rule behind the first restricted bit (for replies), or -1. */
static int restricting_rule(const struct verdicts *v)
{
    for (int b = 0; b < N_BITS; b++)
        if (v->action[b] != VB_RULE_ALLOW)
            return v->rule[b];
    return -1;
}

/* Bits: any DENY decides, else any ASK, else ALLOW. Among the bits with the
 * winning action, the last rule (highest index) is reported. */
static void combine(const struct verdicts *v, unsigned bits, int *action, int *rule)
{
    *action = VB_RULE_ALLOW;
    *rule = -1;
    for (int b = 0; b < N_BITS; b++) {
        if (!(bits & (1u << b)))
            continue;
        int a = v->action[b];
        if (rank(a) > rank(*action) || (a == *action && v->rule[b] > *rule)) {
            *action = a;
            *rule = v->rule[b];
        }
    }
}

static int inside_own_proc(const char *canonical)
{
    for (size_t i = 0; i < n_own_proc; i++) {
        size_t len = own_proc_len[i];
        if (strncmp(canonical, own_proc[i], len) == 0 && (canonical[len] == '/' || canonical[len] == '\0'))
            return 1;
    }
    return 0;
}

/* A refusal the rules did not make (fail closed): DENY without a rule. */
static int refuse(const char *canonical, unsigned need, int rule)
{
    rep.verdict = VB_RULE_DENY;
    rep.rule = rule;
    rep.access = need;
    vb_strlcpy(rep.canonical, canonical, sizeof rep.canonical);
    return -EACCES;
}

/* Fills the reply's decision. An ASK the caller's side already granted for
 * exactly this canonical path goes ahead: the reply keeps VB_RULE_ASK and the
 * ask rule, with a successful result, so the supervisor can tell "asked,
 * allowed" from a plain allow. Granted for another path (the path now
 * reaches something else than what was asked about) it stays refused. */
static int finish(const char *canonical, unsigned need, const struct verdicts *v)
{
    int action, rule;
    combine(v, need, &action, &rule);
    rep.verdict = action;
    rep.rule = rule;
    rep.access = need;
    vb_strlcpy(rep.canonical, canonical, sizeof rep.canonical);
    if (action == VB_RULE_ASK && req.granted[0] && strcmp(req.granted, canonical) == 0)
        return 0;
    return action == VB_RULE_ALLOW ? 0 : -EACCES;
}

/* A decision on a name only (create, unlink, rename...): the inode behind
 * it, if any, keeps its other names, so only the name matters. */
static int decide_name(const char *canonical, unsigned need)
{
    if (inside_own_proc(canonical))
        return refuse(canonical, need, -1);
    struct verdicts v;
    path_verdicts(canonical, need, &v);
    return finish(canonical, need, &v);
}

/* --- objects ------------------------------------------------------------ */

struct object {
    int fd;       /* O_PATH fd, or the attached fd itself; -1: none */
    int owned;    /* 1: ours to close */
    int have_st;
    struct stat st;
    char canonical[PATH_MAX];
};

static void drop(struct object *o)
{
    if (o->fd >= 0 && o->owned)
        close(o->fd);
    o->fd = -1;
}

/* Where the magic link of our `fd` is: *dirfd and the name relative to it
 * ("N" in self_fd_dir, or "/proc/self/fd/N"). */
static const char *self_fd_link(int fd, char out[SELF_FD_PATH_LEN], int *dirfd)
{
    static const char prefix[] = "/proc/self/fd/";
    char digits[12];
    size_t n = 0;
    unsigned v = (unsigned)fd;
    do
        digits[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    memcpy(out, prefix, sizeof prefix - 1);
    for (size_t i = 0; i < n; i++)
        out[sizeof prefix - 1 + i] = digits[n - 1 - i];
    out[sizeof prefix - 1 + n] = '\0';
    *dirfd = self_fd_dir >= 0 ? self_fd_dir : AT_FDCWD;
    return self_fd_dir >= 0 ? out + sizeof prefix - 1 : out;
}

/* Opens the object behind `fd` again with real access (the kernel checks
 * permissions and Landlock again, as the broker: as the command). */
static int reopen(int fd, int flags)
{
    char buf[SELF_FD_PATH_LEN];
    int dirfd;
    const char *link = self_fd_link(fd, buf, &dirfd);
    int r = openat(dirfd, link, flags | O_CLOEXEC);
    return r < 0 ? -errno : r;
}

/* The object's path inside the view, as the kernel names it. When the kernel
 * cannot name it, nothing can be decided: fail closed. */
static int canonical_of(int fd, char out[PATH_MAX])
{
    static const char deleted[] = " (deleted)";
    char buf[SELF_FD_PATH_LEN];
    int dirfd;
    const char *link = self_fd_link(fd, buf, &dirfd);
    ssize_t n = readlinkat(dirfd, link, out, PATH_MAX);
    if (n <= 0 || n >= PATH_MAX) {
        out[0] = '\0';
        return refuse("", 0, -1);
    }
    out[n] = '\0';
    /* an unlinked file is decided on the name it had */
    size_t dl = sizeof deleted - 1;
    if ((size_t)n > dl && memcmp(out + n - dl, deleted, dl) == 0)
        out[n - dl] = '\0';
    return 0;
}

/* The object was reached through a magic link (/proc/PID/fd/N, exe, cwd,
 * root). In the broker those can lead where the command cannot go: the
 * broker's own fds (its socket to the supervisor), or files of the host
 * (the broker's exe is the host's Python, on a host mount). Accept only
 * objects that are reachable by their name inside the view (and use the
 * object reached by that name, on the view's mount), or that have no name
 * (pipes, sockets, anonymous inodes: the command's own fds) other than the
 * broker's socket. */
static int verify_magic(struct object *o, int want_dir)
{
    struct stat got;
    if (fstat(o->fd, &got) != 0)
        return refuse(o->canonical, 0, -1);
    if (o->canonical[0] != '/') {
        if (got.st_dev == sock_dev && got.st_ino == sock_ino)
            return refuse(o->canonical, 0, -1);
        o->st = got;
        o->have_st = 1;
        return 0;
    }
    struct open_how how = {
        .flags = O_PATH | O_NOFOLLOW | O_CLOEXEC | (want_dir ? O_DIRECTORY : 0),
        .resolve = RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS,
    };
    int fd = (int)syscall(SYS_openat2, AT_FDCWD, o->canonical, &how, sizeof how);
    struct stat named;
    if (fd < 0 || fstat(fd, &named) != 0 || named.st_dev != got.st_dev || named.st_ino != got.st_ino) {
        if (fd >= 0)
            close(fd);
        return refuse(o->canonical, 0, -1);
    }
    drop(o);
    o->fd = fd;
    o->owned = 1;
    o->st = named;
    o->have_st = 1;
    return 0;
}

/* openat2(O_PATH) as the command would resolve `path`, then its canonical
 * path. Magic links are refused on the first try, which costs nothing on
 * the usual path; only when one is met is it resolved again with them and
 * checked (verify_magic). */
static int open_at(int dirfd, const char *path, int flags, uint64_t resolve, struct object *o)
{
    o->fd = -1;
    o->owned = 1;
    o->have_st = 0;
    o->canonical[0] = '\0';
    struct open_how how = {
        .flags = (uint64_t)(flags | O_PATH | O_CLOEXEC),
        .resolve = resolve | RESOLVE_NO_MAGICLINKS,
    };
    int magic = 0;
    int fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    if (fd < 0 && errno == ELOOP && !(resolve & RESOLVE_NO_MAGICLINKS)) {
        how.resolve = resolve;
        fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
        magic = 1;
    }
    if (fd < 0)
        return -errno;
    o->fd = fd;
    int rc = canonical_of(fd, o->canonical);
    if (rc == 0 && magic)
        rc = verify_magic(o, flags & O_DIRECTORY);
    if (rc < 0)
        drop(o);
    return rc;
}

/* The object a path names. `dirfd`: the attached fd, or -1 (from "/", the
 * broker's cwd and root: the view's). With AT_EMPTY_PATH and an empty path
 * the attached fd is the object. */
static int resolve_object(int dirfd, const char *path, int at_flags, int follow, uint64_t resolve,
                          int want_dir, struct object *o)
{
    if (path[0] == '\0') {
        o->fd = -1;
        o->canonical[0] = '\0';
        if (!(at_flags & AT_EMPTY_PATH) || dirfd < 0)
            return -ENOENT;
        o->fd = dirfd;
        o->owned = 0;
        o->have_st = 0;
        int rc = canonical_of(dirfd, o->canonical);
        if (rc < 0)
            o->fd = -1;
        return rc;
    }
    return open_at(dirfd < 0 ? AT_FDCWD : dirfd, path, (follow ? 0 : O_NOFOLLOW) | (want_dir ? O_DIRECTORY : 0),
                   resolve, o);
}

/* Where a name is created, removed or renamed: its parent directory, followed
 * like the kernel follows it, and the last component, never followed. */
struct name {
    struct object parent;
    char name[NAME_MAX + 2]; /* for the kernel: the last component, with one '/' if the path had
                                trailing slashes (so the kernel applies their meaning itself) */
    char base[NAME_MAX + 1]; /* the component alone, for calls that must not follow it */
    char canonical[PATH_MAX];/* canonical(parent) + "/" + component: what the rules judge */
};

/* What the kernel answers when the last component is ".", ".." or absent ("/"). */
static int dot_errno(const char *base)
{
    switch (req.op) {
    case VB_OP_MKDIR:
    case VB_OP_LINK:
    case VB_OP_SYMLINK:
        return -EEXIST;
    case VB_OP_OPEN:
        return -EISDIR;
    case VB_OP_UNLINK:
        if (!(req.at_flags & AT_REMOVEDIR))
            return -EISDIR;
        return base[0] == '\0' ? -EBUSY : base[1] == '.' ? -ENOTEMPTY : -EINVAL;
    default:
        return -EBUSY;
    }
}

static int resolve_parent(int dirfd, const char *path, uint64_t resolve, struct name *n)
{
    n->parent.fd = -1;
    size_t len = strlen(path);
    if (len == 0)
        return -ENOENT;
    size_t end = len;
    while (end > 0 && path[end - 1] == '/')
        end--;
    size_t start = end;
    while (start > 0 && path[start - 1] != '/')
        start--;
    size_t base_len = end - start;
    if (base_len > NAME_MAX)
        return -ENAMETOOLONG;

    char parent[PATH_MAX];
    if (start == 0) {
        parent[0] = end == 0 ? '/' : '.'; /* "/" itself, or a name relative to dirfd */
        parent[1] = '\0';
    } else {
        memcpy(parent, path, start); /* keeps its slash: "/" stays "/" */
        parent[start] = '\0';
    }
    int rc = open_at(dirfd < 0 ? AT_FDCWD : dirfd, parent, O_DIRECTORY, resolve, &n->parent);
    if (rc < 0)
        return rc;

    memcpy(n->base, path + start, base_len);
    n->base[base_len] = '\0';
    if (base_len == 0 || strcmp(n->base, ".") == 0 || strcmp(n->base, "..") == 0) {
        rc = dot_errno(n->base);
        drop(&n->parent);
        return rc;
    }
    size_t plen = strlen(n->parent.canonical);
    if (plen == 1 && n->parent.canonical[0] == '/')
        plen = 0; /* no "//" at the root */
    if (plen + 1 + base_len >= sizeof n->canonical) {
        drop(&n->parent);
        return -ENAMETOOLONG;
    }
    memcpy(n->canonical, n->parent.canonical, plen);
    n->canonical[plen] = '/';
    memcpy(n->canonical + plen + 1, n->base, base_len + 1);
    memcpy(n->name, n->base, base_len + 1);
    if (end < len) {
        n->name[base_len] = '/';
        n->name[base_len + 1] = '\0';
    }
    return 0;
}

/* --- deciding on an object --------------------------------------------- */

static void record_inode(const struct stat *st, const struct verdicts *v)
{
    if (!is_restricted(v, ACCESS_ALL))
        return;
    if (inodes.count * 2 >= inodes.cap && inode_grow() < 0) {
        inodes.lost = 1;
        return;
    }
    struct inode_entry *e = inode_slot(inodes.slots, inodes.cap, (uint64_t)st->st_dev, (uint64_t)st->st_ino);
    if (!e->used) {
        e->used = 1;
        e->dev = (uint64_t)st->st_dev;
        e->ino = (uint64_t)st->st_ino;
        for (int b = 0; b < N_BITS; b++)
            e->rule[b] = -1;
        inodes.count++;
    }
    for (int b = 0; b < N_BITS; b++)
        if (v->action[b] != VB_RULE_ALLOW &&
            (e->rule[b] < 0 || rank(v->action[b]) > rank(rule_action(e->rule[b]))))
            e->rule[b] = v->rule[b];
}

static int has_other_names(const struct object *o)
{
    return o->have_st && S_ISREG(o->st.st_mode) && o->st.st_nlink > 1;
}

/* The decision on an object the kernel reached: the rules on its canonical
 * path and, for a regular file with other names, the rules on those names
 * that the inode set knows of (per bit, the stricter of the two wins, so a
 * grant on one name never lifts a deny of another). */
static int decide_object(struct object *o, unsigned need)
{
    if (inside_own_proc(o->canonical))
        return refuse(o->canonical, need, -1);
    struct verdicts v;
    path_verdicts(o->canonical, need, &v);
    int restricted = is_restricted(&v, need);
    /* the inode only matters with other names known, or to record this one */
    if (!o->have_st && (restricted || inodes.count || inodes.lost)) {
        if (fstat(o->fd, &o->st) != 0)
            return refuse(o->canonical, need, -1);
        o->have_st = 1;
    }
    if (has_other_names(o)) {
        if (restricted) {
            struct verdicts all;
            path_verdicts(o->canonical, ACCESS_ALL, &all);
            record_inode(&o->st, &all);
        }
        const struct inode_entry *e = inode_lookup((uint64_t)o->st.st_dev, (uint64_t)o->st.st_ino);
        if (e) {
            for (int b = 0; b < N_BITS; b++)
                if ((need & (1u << b)) && e->rule[b] >= 0 && rank(rule_action(e->rule[b])) > rank(v.action[b])) {
                    v.action[b] = rule_action(e->rule[b]);
                    v.rule[b] = e->rule[b];
                }
        } else if (inodes.lost && !restricted) {
            return refuse(o->canonical, need, -1);
        }
    }
    return finish(o->canonical, need, &v);
}

/* --- directory walks ----------------------------------------------------
 * One directory open at a time: the directories still to visit wait as paths
 * relative to the top on a stack in mmap'd memory, so depth costs neither
 * fds nor stack. Symlinks are never followed (RESOLVE_NO_SYMLINKS also holds
 * if one is swapped in between). */

struct vb_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* Static, not on the stack: walks never nest, and the broker runs on the
 * stack of whichever caller's thread spawned it, which may be small. */
static struct arena pending;
static uint64_t dents[4096]; /* 32 KiB, 8-byte aligned for the records */
static char walk_full[PATH_MAX], walk_rel[PATH_MAX];

static int pending_push(const char *rel, size_t len)
{
    uint32_t n = (uint32_t)len;
    if (arena_reserve(&pending, len + 1 + sizeof n) < 0)
        return -ENOMEM;
    memcpy(pending.base + pending.len, rel, len + 1);
    memcpy(pending.base + pending.len + len + 1, &n, sizeof n);
    pending.len += len + 1 + sizeof n;
    return 0;
}

static int pending_pop(char out[PATH_MAX])
{
    uint32_t n;
    if (pending.len == 0)
        return 0;
    memcpy(&n, pending.base + pending.len - sizeof n, sizeof n);
    pending.len -= sizeof n + n + 1;
    memcpy(out, pending.base + pending.len, (size_t)n + 1);
    return 1;
}

/* fn(ctx, dirfd, name, is_dir, path) for each entry below `top` (a directory
 * fd whose canonical path is `top_path`); a negative return stops the walk.
 * `strict`: an entry that cannot be listed or named fails the walk with
 * -EACCES (a check that cannot see everything must not pass), else it is
 * skipped. `limit`: at most that many entries (0: no limit), else -E2BIG. */
typedef int (*walk_fn)(void *ctx, int dirfd, const char *name, int is_dir, const char *path);

static int walk_tree(int top, const char *top_path, int strict, size_t limit, walk_fn fn, void *ctx)
{
    char *full = walk_full, *rel = walk_rel;
    size_t top_len = strlen(top_path);
    if (top_len == 1 && top_path[0] == '/')
        top_len = 0;
    if (top_len + 1 >= PATH_MAX)
        return strict ? -EACCES : 0;
    memcpy(full, top_path, top_len);
    full[top_len] = '/';
    char *const rel_in_full = full + top_len + 1; /* full = top_path + "/" + rel */
    size_t seen = 0;
    int rc = 0;

    pending.len = 0;
    if (pending_push("", 0) < 0)
        return -ENOMEM;
    while (rc == 0 && pending_pop(rel)) {
        size_t rel_len = strlen(rel);
        int dfd;
        if (rel_len == 0) {
            dfd = openat(top, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        } else {
            struct open_how how = {
                .flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
            };
            dfd = (int)syscall(SYS_openat2, top, rel, &how, sizeof how);
        }
        if (dfd < 0) {
            if (strict)
                rc = -EACCES;
            continue;
        }
        size_t prefix = top_len + 1 + rel_len + (rel_len ? 1 : 0);
        if (prefix >= PATH_MAX) {
            close(dfd);
            if (strict)
                rc = -EACCES;
            continue;
        }
        memcpy(rel_in_full, rel, rel_len);
        if (rel_len)
            rel_in_full[rel_len] = '/';
        for (;;) {
            long got = syscall(SYS_getdents64, dfd, dents, sizeof dents);
            if (got <= 0) {
                if (got < 0 && strict)
                    rc = -EACCES;
                break;
            }
            for (long off = 0; off < got && rc == 0;) {
                struct vb_dirent64 *d = (struct vb_dirent64 *)((char *)dents + off);
                off += d->d_reclen;
                const char *nm = d->d_name;
                if (nm[0] == '.' && (nm[1] == '\0' || (nm[1] == '.' && nm[2] == '\0')))
                    continue;
                if (limit && ++seen > limit) {
                    rc = -E2BIG;
                    break;
                }
                size_t nlen = strlen(nm);
                if (prefix + nlen >= PATH_MAX) {
                    if (strict)
                        rc = -EACCES;
                    continue;
                }
                memcpy(full + prefix, nm, nlen + 1);
                int is_dir = d->d_type == DT_DIR;
                if (d->d_type == DT_UNKNOWN) {
                    struct stat st;
                    if (fstatat(dfd, nm, &st, AT_SYMLINK_NOFOLLOW) != 0) {
                        if (strict)
                            rc = -EACCES;
                        continue;
                    }
                    is_dir = S_ISDIR(st.st_mode);
                }
                rc = fn(ctx, dfd, nm, is_dir, full);
                if (rc == 0 && is_dir && pending_push(rel_in_full, rel_len + (rel_len ? 1 : 0) + nlen) < 0)
                    rc = -ENOMEM;
            }
            if (rc != 0)
                break;
        }
        close(dfd);
    }
    return rc;
}

/* --- start-up: the broker's own /proc, and hard links in writable mounts --- */

/* Every procfs mount the broker sees (its mountinfo), with the broker's pid
 * as that procfs names it ("self"). Without mountinfo, /proc and getpid(). */
static void add_own_proc(const char *mount_point)
{
    char self[PATH_MAX], pid[32];
    if (n_own_proc >= MAX_OWN_PROC || vb_strlcpy(self, mount_point, sizeof self) < 0 ||
        vb_strlcat(self, strcmp(mount_point, "/") == 0 ? "self" : "/self", sizeof self) < 0)
        return;
    ssize_t n = readlink(self, pid, sizeof pid - 1);
    if (n <= 0)
        return; /* the broker is not in this procfs's pid namespace: nothing of it shows */
    pid[n] = '\0';
    char *out = own_proc[n_own_proc];
    if (vb_strlcpy(out, strcmp(mount_point, "/") == 0 ? "" : mount_point, PATH_MAX) < 0 ||
        vb_strlcat(out, "/", PATH_MAX) < 0 || vb_strlcat(out, pid, PATH_MAX) < 0)
        return;
    for (size_t i = 0; i < n_own_proc; i++)
        if (strcmp(own_proc[i], out) == 0)
            return;
    own_proc_len[n_own_proc++] = strlen(out);
}

/* A mountinfo path field, unescaping "\ooo" (space, tab, newline, '\'). */
static void unescape_field(const char *p, const char *end, char *out, size_t cap)
{
    size_t n = 0;
    while (p < end && n + 1 < cap) {
        if (p[0] == '\\' && end - p >= 4 && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
            p[3] >= '0' && p[3] <= '7') {
            out[n++] = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
            p += 4;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
}

static void find_own_proc(void)
{
    struct arena buf = {0};
    int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        for (;;) {
            if (arena_reserve(&buf, 65536) < 0) {
                buf.len = 0;
                break;
            }
            ssize_t n = read(fd, buf.base + buf.len, buf.cap - buf.len);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            buf.len += (size_t)n;
        }
        close(fd);
    }
    /* "36 35 98:0 /root /mount/point opts [optional...] - fstype source superopts" */
    for (char *line = buf.base, *eof = buf.base + buf.len; line && line < eof;) {
        char *nl = memchr(line, '\n', (size_t)(eof - line));
        char *end = nl ? nl : eof;
        const char *field[5];
        size_t nf = 0;
        char *p = line;
        while (nf < 5 && p < end) {
            while (p < end && *p == ' ')
                p++;
            field[nf++] = p;
            while (p < end && *p != ' ')
                p++;
        }
        char *sep = memmem(line, (size_t)(end - line), " - ", 3);
        if (nf == 5 && sep && (size_t)(end - sep) > 7 && memcmp(sep + 3, "proc ", 5) == 0) {
            char mount_point[PATH_MAX];
            const char *mp_end = field[4];
            while (mp_end < end && *mp_end != ' ')
                mp_end++;
            unescape_field(field[4], mp_end, mount_point, sizeof mount_point);
            add_own_proc(mount_point);
        }
        line = nl ? nl + 1 : NULL;
    }
    if (buf.base)
        munmap(buf.base, buf.cap);
    if (n_own_proc == 0)
        add_own_proc("/proc");
    if (n_own_proc == 0) {
        /* no procfs answers "self": name the usual place anyway */
        char *out = own_proc[0];
        char digits[12];
        size_t n = 0;
        for (unsigned v = (unsigned)getpid(); n == 0 || v; v /= 10)
            digits[n++] = (char)('0' + v % 10);
        memcpy(out, "/proc/", 6);
        for (size_t i = 0; i < n; i++)
            out[6 + i] = digits[n - 1 - i];
        out[6 + n] = '\0';
        own_proc_len[0] = 6 + n;
        n_own_proc = 1;
    }
}

static void scan_file(int dirfd, const char *name, const char *path)
{
    struct verdicts v;
    path_verdicts(path, ACCESS_ALL, &v);
    if (!is_restricted(&v, ACCESS_ALL))
        return; /* no stat for the usual file: the rules are matched first */
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) && st.st_nlink > 1)
        record_inode(&st, &v);
}

static int scan_entry(void *ctx, int dirfd, const char *name, int is_dir, const char *path)
{
    (void)ctx;
    if (!is_dir)
        scan_file(dirfd, name, path);
    return 0;
}

/* Hard links made before the sandbox started, in what the command can write
 * (a restricted name linked elsewhere beforehand, by the host or by an earlier
 * run): their inodes are restricted from the start. Read-only parts of the
 * view are not walked (too big: the host's /usr); names met later are
 * recorded as decisions meet them. Entries the broker cannot open are
 * skipped: the command cannot open them either. */
static void scan_hard_links(const struct vb_plan *plan)
{
    if (!has_restricting_rules)
        return;
    for (size_t i = 0; i < plan->n_mounts; i++) {
        const struct vb_mount *m = &plan->mounts[i];
        if (m->kind != VB_MOUNT_BIND || (m->flags & VB_MF_RDONLY) || !m->target)
            continue;
        struct object top;
        if (open_at(AT_FDCWD, m->target, 0, 0, &top) < 0)
            continue;
        if (fstat(top.fd, &top.st) == 0) {
            if (S_ISDIR(top.st.st_mode)) {
                walk_tree(top.fd, top.canonical, 0, 0, scan_entry, NULL);
            } else if (S_ISREG(top.st.st_mode) && top.st.st_nlink > 1) { /* a bound file */
                struct verdicts v;
                path_verdicts(top.canonical, ACCESS_ALL, &v);
                record_inode(&top.st, &v);
            }
        }
        drop(&top);
    }
}

/* --- the wire format (broker.h) ----------------------------------------- */

/* Appends `text` up to and with its NUL. */
static size_t put_string(char *wire, size_t at, const char *text, size_t cap)
{
    size_t len = strnlen(text, cap - 1);
    memcpy(wire + at, text, len);
    wire[at + len] = '\0';
    return at + len + 1;
}

/* Takes a NUL-terminated string at `*at` into `out` (capacity `cap`). */
static int take_string(const char *wire, size_t len, size_t *at, char *out, size_t cap)
{
    const char *end = *at < len ? memchr(wire + *at, '\0', len - *at) : NULL;
    if (!end || (size_t)(end - (wire + *at)) >= cap)
        return -EINVAL;
    size_t n = (size_t)(end - (wire + *at));
    memcpy(out, wire + *at, n + 1);
    *at += n + 1;
    return 0;
}

size_t vb_wire_pack_request(const struct vb_broker_request *r, char *wire)
{
    size_t at = offsetof(struct vb_broker_request, granted);
    memcpy(wire, r, at);
    at = put_string(wire, at, r->granted, sizeof r->granted);
    at = put_string(wire, at, r->path, sizeof r->path);
    return put_string(wire, at, r->path2, sizeof r->path2);
}

int vb_wire_unpack_request(const char *wire, size_t len, struct vb_broker_request *r)
{
    size_t at = offsetof(struct vb_broker_request, granted);
    if (len < at)
        return -EINVAL;
    memcpy(r, wire, at);
    if (take_string(wire, len, &at, r->granted, sizeof r->granted) || take_string(wire, len, &at, r->path, sizeof r->path) ||
        take_string(wire, len, &at, r->path2, sizeof r->path2) || at != len)
        return -EINVAL;
    return 0;
}

/* How many bytes of `u` an operation's reply fills. */
static size_t payload_of(const struct vb_broker_reply *r, int op)
{
    if (r->result < 0)
        return 0;
    switch (op) {
    case VB_OP_STAT:
    case VB_OP_EXEC:
        return sizeof r->u.st;
    case VB_OP_STATX:
        return sizeof r->u.stx;
    case VB_OP_READLINK:
        return (size_t)r->result < sizeof r->u.link ? (size_t)r->result : sizeof r->u.link;
    default:
        return 0;
    }
}

size_t vb_wire_pack_reply(const struct vb_broker_reply *r, int op, char *wire)
{
    size_t at = offsetof(struct vb_broker_reply, canonical);
    memcpy(wire, r, at);
    at = put_string(wire, at, r->canonical, sizeof r->canonical);
    size_t payload = payload_of(r, op);
    memcpy(wire + at, &r->u, payload);
    return at + payload;
}

int vb_wire_unpack_reply(const char *wire, size_t len, struct vb_broker_reply *r)
{
    size_t at = offsetof(struct vb_broker_reply, canonical);
    if (len < at)
        return -EINVAL;
    memcpy(r, wire, at);
    if (take_string(wire, len, &at, r->canonical, sizeof r->canonical) || len - at > sizeof r->u)
        return -EINVAL;
    memcpy(&r->u, wire + at, len - at);
    return 0;
}

/* --- replies ----------------------------------------------------------- */

static char wire[VB_WIRE_MAX];

static void send_reply(int fd)
{
    for (;;) {
        struct iovec iov = {.iov_base = wire, .iov_len = vb_wire_pack_reply(&rep, req.op, wire)};
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } control;
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        if (fd >= 0) {
            memset(&control, 0, sizeof control);
            msg.msg_control = control.buf;
            msg.msg_controllen = sizeof control.buf;
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &fd, sizeof fd);
        }
        if (sendmsg(broker_sock, &msg, MSG_NOSIGNAL) >= 0)
            return;
        if (errno == EINTR)
            continue;
        if (fd >= 0 && errno != EPIPE && errno != ECONNRESET && errno != ENOTCONN && errno != EBADF) {
            /* the fd could not travel (too many in flight): say so instead */
            rep.result = -errno;
            fd = -1;
            continue;
        }
        _exit(0); /* the supervisor's end is gone: nothing is left to serve */
    }
}

/* --- the operations ------------------------------------------------------
 * Each returns the reply's result; the open ones also leave the fd to send. */

static unsigned open_access(int flags)
{
    if (flags & O_PATH)
        return VB_ACCESS_READ;
    unsigned need;
    switch (flags & O_ACCMODE) {
    case O_RDONLY:
        need = VB_ACCESS_READ;
        break;
    case O_WRONLY:
        need = VB_ACCESS_WRITE;
        break;
    default: /* O_RDWR, and 3 which the kernel checks as both */
        need = VB_ACCESS_READ | VB_ACCESS_WRITE;
        break;
    }
    if (flags & O_TRUNC)
        need |= VB_ACCESS_WRITE;
    return need;
}

/* ftruncate through a write-only reopening, for truncate(2) and O_RDONLY|O_TRUNC. */
static int truncate_object(int fd, off_t size)
{
    int w = reopen(fd, O_WRONLY | O_NOCTTY);
    if (w < 0)
        return w;
    int rc = ftruncate(w, size) == 0 ? 0 : -errno;
    close(w);
    return rc;
}

/* Opening a FIFO without O_NONBLOCK waits for its other end: in a helper
 * (a raw fork; SIGCHLD is ignored, so it is reaped by the kernel) that sends
 * the reply itself, so the broker keeps serving meanwhile. */
static int64_t open_fifo_in_helper(int fd, int flags, int *replied)
{
    pid_t pid = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        self_fd_dir = -1; /* that one lists the broker's fds, not ours */
        int r = reopen(fd, flags);
        rep.result = r < 0 ? r : 0;
        send_reply(r);
        _exit(0);
    }
    *replied = 1;
    return 0;
}

/* The open of an existing object, held as an O_PATH fd: decided, then opened
 * again from that very fd, never from the path. */
static int64_t open_existing(struct object *o, int flags, int *out_fd, int *replied)
{
    if (!o->have_st) {
        if (fstat(o->fd, &o->st) != 0)
            return -errno;
        o->have_st = 1;
    }
    if ((flags & O_NOFOLLOW) && S_ISLNK(o->st.st_mode) && !(flags & O_PATH))
        return -ELOOP;
    int rc = decide_object(o, open_access(flags));
    if (rc < 0)
        return rc;
    if (flags & O_PATH) {
        /* SECCOMP_IOCTL_NOTIF_ADDFD cannot install an O_PATH file (the kernel's fget
         * refuses them). A directory or a regular file goes over opened for reading
         * instead, as the decision (READ) and the kernel (which checks the command's
         * permissions and Landlock again) both allow: every use of an O_PATH fd
         * works on it. Anything else (a symlink under O_NOFOLLOW, a device, a FIFO,
         * a socket: opening those has effects), or without read permission, cannot
         * be handed over: EOPNOTSUPP, which is also what glibc's lchmod, the usual
         * O_PATH|O_NOFOLLOW caller, answers for a symlink. */
        if (S_ISDIR(o->st.st_mode) || S_ISREG(o->st.st_mode)) {
            int fd = reopen(o->fd, O_RDONLY | O_NOCTTY | (S_ISDIR(o->st.st_mode) ? O_DIRECTORY : 0));
            if (fd >= 0) {
                *out_fd = fd;
                return 0;
            }
        }
        return -EOPNOTSUPP;
    }
    /* O_CREAT/O_EXCL are spent; O_NOFOLLOW was applied when resolving; O_TRUNC
     * comes after the decision; O_NOCTTY: a terminal must not become the
     * broker's (a session leader) controlling terminal. */
    int again = (flags & ~(O_CREAT | O_EXCL | O_NOFOLLOW | O_TRUNC)) | O_NOCTTY;
    if (S_ISFIFO(o->st.st_mode) && !(flags & O_NONBLOCK) && (flags & O_ACCMODE) != O_RDWR)
        return open_fifo_in_helper(o->fd, again, replied);
    int fd = reopen(o->fd, again);
    if (fd < 0)
        return fd;
    if ((flags & O_TRUNC) && S_ISREG(o->st.st_mode)) {
        rc = (flags & O_ACCMODE) == O_RDONLY ? truncate_object(o->fd, 0) : (ftruncate(fd, 0) == 0 ? 0 : -errno);
        if (rc < 0) {
            close(fd);
            return rc;
        }
    }
    *out_fd = fd;
    return 0;
}

/* The existing-object path once more, when the name turned out to exist after all. */
static int64_t open_existing_path(int dfd, int flags, int *out_fd, int *replied)
{
    struct object o;
    int rc = resolve_object(dfd, req.path, 0, !(flags & O_NOFOLLOW), req.resolve, flags & O_DIRECTORY, &o);
    if (rc < 0)
        return rc;
    int64_t r = open_existing(&o, flags, out_fd, replied);
    drop(&o);
    return r;
}

/* A new file: decided on its name (WRITE), created exclusively at that name
 * in the parent that was resolved, so it is exactly the name decided on. */
static int64_t open_create(int dfd, int flags, int exclusive, int *out_fd, int *replied)
{
    struct name n;
    int rc = resolve_parent(dfd, req.path, req.resolve, &n);
    if (rc < 0)
        return rc;
    if (!exclusive) {
        struct stat st;
        if (fstatat(n.parent.fd, n.base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            drop(&n.parent);
            /* a dangling symlink: the kernel would create its target, a name
             * nobody checked first */
            if (S_ISLNK(st.st_mode))
                return refuse(n.canonical, VB_ACCESS_WRITE, -1);
            return open_existing_path(dfd, flags, out_fd, replied); /* it appeared meanwhile */
        }
    }
    rc = decide_name(n.canonical, VB_ACCESS_WRITE);
    if (rc < 0) {
        drop(&n.parent);
        return rc;
    }
    struct open_how how = {
        .flags = (uint64_t)(flags | O_EXCL | O_CLOEXEC),
        .mode = req.mode & 07777,
        .resolve = req.resolve,
    };
    int fd = (int)syscall(SYS_openat2, n.parent.fd, n.name, &how, sizeof how);
    rc = fd < 0 ? -errno : 0;
    drop(&n.parent);
    if (rc == -EEXIST && !exclusive)
        return open_existing_path(dfd, flags, out_fd, replied); /* lost a race: it exists now */
    if (rc < 0)
        return rc;
    *out_fd = fd;
    return 0;
}

/* open, openat, openat2, creat */
static int64_t sys_open(int dfd, int *out_fd, int *replied)
{
    if (req.flags >> 32)
        return -EINVAL; /* as openat2 answers; open() has no such bits either */
    int flags = (int)req.flags;
    if (flags & O_PATH)
        flags &= O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC; /* the kernel ignores the rest */
    if ((flags & O_TMPFILE) == O_TMPFILE) {
        /* an unnamed file in a directory: decided as a write to the directory */
        struct object dir;
        int rc = resolve_object(dfd, req.path, 0, !(flags & O_NOFOLLOW), req.resolve, 1, &dir);
        if (rc < 0)
            return rc;
        rc = decide_name(dir.canonical, VB_ACCESS_WRITE);
        if (rc == 0) {
            int fd = openat(dir.fd, ".", flags | O_CLOEXEC, (mode_t)(req.mode & 07777));
            rc = fd < 0 ? -errno : 0;
            *out_fd = fd;
        }
        drop(&dir);
        return rc;
    }
    if ((flags & O_CREAT) && (flags & O_DIRECTORY))
        return -EINVAL; /* as the kernel (6.4 on) answers */
    if ((flags & O_CREAT) && (flags & O_EXCL))
        return open_create(dfd, flags, 1, out_fd, replied);

    struct object o;
    int rc = resolve_object(dfd, req.path, 0, !(flags & O_NOFOLLOW), req.resolve, flags & O_DIRECTORY, &o);
    if (rc == -ENOENT && (flags & O_CREAT))
        return open_create(dfd, flags, 0, out_fd, replied);
    if (rc < 0)
        return rc;
    int64_t r = open_existing(&o, flags, out_fd, replied);
    drop(&o);
    return r;
}

/* stat, lstat, newfstatat */
static int64_t sys_stat(int dfd)
{
    struct object o;
    int rc = resolve_object(dfd, req.path, req.at_flags, !(req.at_flags & AT_SYMLINK_NOFOLLOW), 0, 0, &o);
    if (rc < 0)
        return rc;
    if (o.have_st || fstat(o.fd, &o.st) == 0) {
        o.have_st = 1;
        rc = decide_object(&o, VB_ACCESS_READ);
        if (rc == 0)
            rep.u.st = o.st;
    } else {
        rc = -errno;
    }
    drop(&o);
    return rc;
}

/* statx */
static int64_t sys_statx(int dfd)
{
    struct object o;
    int rc = resolve_object(dfd, req.path, req.at_flags, !(req.at_flags & AT_SYMLINK_NOFOLLOW), 0, 0, &o);
    if (rc < 0)
        return rc;
    struct statx stx;
    /* type, links and inode too: the decision needs them (the kernel fills
     * the basic fields anyway) */
    if (statx(o.fd, "", AT_EMPTY_PATH | (req.at_flags & AT_STATX_SYNC_TYPE),
              req.mask | STATX_TYPE | STATX_NLINK | STATX_INO, &stx) == 0) {
        o.st.st_mode = stx.stx_mode;
        o.st.st_nlink = stx.stx_nlink;
        o.st.st_ino = stx.stx_ino;
        o.st.st_dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
        o.have_st = 1;
        rc = decide_object(&o, VB_ACCESS_READ);
        if (rc == 0)
            rep.u.stx = stx;
    } else {
        rc = -errno;
    }
    drop(&o);
    return rc;
}

/* access, faccessat, faccessat2 */
static int64_t sys_access(int dfd)
{
    if (req.mode & ~(uint64_t)(R_OK | W_OK | X_OK))
        return -EINVAL;
    int mode = (int)req.mode;
    unsigned need = (mode & R_OK ? VB_ACCESS_READ : 0) | (mode & W_OK ? VB_ACCESS_WRITE : 0) |
                    (mode & X_OK ? VB_ACCESS_EXEC : 0);
    if (!need)
        need = VB_ACCESS_READ; /* F_OK: whether it exists is read from its directory */
    struct object o;
    int rc = resolve_object(dfd, req.path, req.at_flags, !(req.at_flags & AT_SYMLINK_NOFOLLOW), 0, 0, &o);
    if (rc < 0)
        return rc;
    rc = decide_object(&o, need);
    if (rc == 0 && syscall(__NR_faccessat2, o.fd, "", mode, AT_EMPTY_PATH | (req.at_flags & AT_EACCESS)) != 0)
        rc = -errno;
    drop(&o);
    return rc;
}

/* readlink, readlinkat */
static int64_t sys_readlink(int dfd)
{
    struct object o;
    /* readlinkat takes an empty path as "the link dirfd is" without AT_EMPTY_PATH */
    int rc = resolve_object(dfd, req.path, req.at_flags | AT_EMPTY_PATH, 0, 0, 0, &o);
    if (rc < 0)
        return rc;
    rc = decide_object(&o, VB_ACCESS_READ);
    int64_t r = rc;
    if (rc == 0) {
        size_t cap = req.size < sizeof rep.u.link ? (size_t)req.size : sizeof rep.u.link;
        ssize_t n = readlinkat(o.fd, "", rep.u.link, cap);
        r = n;
        /* an empty path on something else answers ENOENT; the caller named it */
        if (n < 0)
            r = errno == ENOENT && req.path[0] ? -EINVAL : -errno;
    }
    drop(&o);
    return r;
}

/* unlink, rmdir, unlinkat */
static int64_t sys_unlink(int dfd)
{
    struct name n;
    int rc = resolve_parent(dfd, req.path, 0, &n);
    if (rc < 0)
        return rc;
    rc = decide_name(n.canonical, VB_ACCESS_WRITE);
    if (rc == 0 && unlinkat(n.parent.fd, n.name, req.at_flags & AT_REMOVEDIR) != 0)
        rc = -errno;
    drop(&n.parent);
    return rc;
}

/* mkdir, mkdirat */
static int64_t sys_mkdir(int dfd)
{
    struct name n;
    int rc = resolve_parent(dfd, req.path, 0, &n);
    if (rc < 0)
        return rc;
    rc = decide_name(n.canonical, VB_ACCESS_WRITE);
    if (rc == 0 && mkdirat(n.parent.fd, n.name, (mode_t)(req.mode & 07777)) != 0)
        rc = -errno;
    drop(&n.parent);
    return rc;
}

/* A move lifts a restriction when the old name is restricted and the new name
 * is not judged the same, bit for bit (a rename would otherwise be a way out
 * of any deny rule). */
static int lifts_restriction(const char *old_path, const char *new_path, int *rule)
{
    struct verdicts a, b;
    path_verdicts(old_path, ACCESS_ALL, &a);
    if (!is_restricted(&a, ACCESS_ALL))
        return 0;
    path_verdicts(new_path, ACCESS_ALL, &b);
    for (int i = 0; i < N_BITS; i++)
        if (a.action[i] != b.action[i]) {
            *rule = restricting_rule(&a);
            return 1;
        }
    return 0;
}

struct move_check {
    const char *old_top, *new_top;
    size_t old_len;
    int rule;
    char at[PATH_MAX];       /* the entry that would lose its restriction */
    char new_path[PATH_MAX]; /* scratch: an entry's path at the destination */
};

static int move_entry(void *ctx, int dirfd, const char *name, int is_dir, const char *path)
{
    (void)dirfd, (void)name, (void)is_dir;
    struct move_check *m = ctx;
    char *new_path = m->new_path;
    if (vb_strlcpy(new_path, m->new_top, PATH_MAX) < 0 || vb_strlcat(new_path, path + m->old_len, PATH_MAX) < 0) {
        vb_strlcpy(m->at, path, sizeof m->at);
        m->rule = -1;
        return -EACCES; /* cannot name its new place: cannot judge it */
    }
    if (lifts_restriction(path, new_path, &m->rule)) {
        vb_strlcpy(m->at, path, sizeof m->at);
        return -EACCES;
    }
    return 0;
}

/* Whatever `from` names, and everything below it when it is a directory,
 * keeps its restrictions at `to`. */
static int check_move(struct name *from, const char *to)
{
    struct stat st;
    if (fstatat(from->parent.fd, from->base, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return -errno;
    int rule = -1;
    if (lifts_restriction(from->canonical, to, &rule))
        return refuse(from->canonical, VB_ACCESS_WRITE, rule);
    if (!S_ISDIR(st.st_mode))
        return 0;
    struct open_how how = {
        .flags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
        .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    int dir = (int)syscall(SYS_openat2, from->parent.fd, from->base, &how, sizeof how);
    if (dir < 0)
        return refuse(from->canonical, VB_ACCESS_WRITE, -1);
    static struct move_check m; /* static: see walk_full */
    m.old_top = from->canonical;
    m.new_top = to;
    m.old_len = strlen(from->canonical);
    m.rule = -1;
    m.at[0] = '\0';
    int rc = walk_tree(dir, from->canonical, 1, MOVE_WALK_LIMIT, move_entry, &m);
    close(dir);
    if (rc == 0)
        return 0;
    /* a restricted entry, or one that could not be seen (or too many): fail closed */
    return refuse(m.at[0] ? m.at : from->canonical, VB_ACCESS_WRITE, m.at[0] ? m.rule : -1);
}

/* rename, renameat, renameat2 */
static int64_t sys_rename(int dfd1, int dfd2)
{
    static struct name from, to; /* static: see walk_full */
    int rc = resolve_parent(dfd1, req.path, 0, &from);
    if (rc < 0)
        return rc;
    rc = resolve_parent(dfd2, req.path2, 0, &to);
    if (rc < 0) {
        drop(&from.parent);
        return rc;
    }
    unsigned flags = (unsigned)req.flags;
    /* the destination first, so a successful reply names the source */
    rc = decide_name(to.canonical, VB_ACCESS_WRITE);
    if (rc == 0)
        rc = decide_name(from.canonical, VB_ACCESS_WRITE);
    if (rc == 0 && has_restricting_rules) {
        rc = check_move(&from, to.canonical);
        if (rc == 0 && (flags & RENAME_EXCHANGE))
            rc = check_move(&to, from.canonical);
    }
    if (rc == 0 && syscall(SYS_renameat2, from.parent.fd, from.name, to.parent.fd, to.name, flags) != 0)
        rc = -errno;
    drop(&from.parent);
    drop(&to.parent);
    return rc;
}

/* link, linkat */
static int64_t sys_link(int dfd1, int dfd2)
{
    static struct object src; /* static: see walk_full */
    int rc = resolve_object(dfd1, req.path, req.at_flags, req.at_flags & AT_SYMLINK_FOLLOW, 0, 0, &src);
    if (rc < 0)
        return rc;
    if (!src.have_st && fstat(src.fd, &src.st) != 0) {
        rc = -errno;
        drop(&src);
        return rc;
    }
    src.have_st = 1;
    /* a new name for a restricted file would be a way around its rules */
    struct verdicts v;
    path_verdicts(src.canonical, ACCESS_ALL, &v);
    const struct inode_entry *e = inode_lookup((uint64_t)src.st.st_dev, (uint64_t)src.st.st_ino);
    if (inside_own_proc(src.canonical) || is_restricted(&v, ACCESS_ALL) || e) {
        int rule = restricting_rule(&v);
        for (int b = 0; e && rule < 0 && b < N_BITS; b++)
            rule = e->rule[b];
        if (has_other_names(&src))
            record_inode(&src.st, &v);
        rc = refuse(src.canonical, VB_ACCESS_WRITE, rule);
        drop(&src);
        return rc;
    }
    static struct name to;
    rc = resolve_parent(dfd2, req.path2, 0, &to);
    if (rc == 0) {
        rc = decide_name(to.canonical, VB_ACCESS_WRITE);
        /* through the fd, so exactly the inode checked gets the new name */
        char buf[SELF_FD_PATH_LEN];
        int dirfd;
        const char *from = self_fd_link(src.fd, buf, &dirfd);
        if (rc == 0 && linkat(dirfd, from, to.parent.fd, to.name, AT_SYMLINK_FOLLOW) != 0)
            rc = -errno;
        drop(&to.parent);
    }
    drop(&src);
    return rc;
}

/* symlink, symlinkat: the link's text is never resolved */
static int64_t sys_symlink(int dfd2)
{
    struct name n;
    int rc = resolve_parent(dfd2, req.path2, 0, &n);
    if (rc < 0)
        return rc;
    rc = decide_name(n.canonical, VB_ACCESS_WRITE);
    if (rc == 0 && symlinkat(req.path, n.parent.fd, n.name) != 0)
        rc = -errno;
    drop(&n.parent);
    return rc;
}

/* truncate */
static int64_t sys_truncate(int dfd)
{
    if ((int64_t)req.size < 0)
        return -EINVAL;
    struct object o;
    int rc = resolve_object(dfd, req.path, 0, 1, 0, 0, &o);
    if (rc < 0)
        return rc;
    if (o.have_st || fstat(o.fd, &o.st) == 0)
        o.have_st = 1;
    else
        rc = -errno;
    /* the kernel's answers, and a FIFO must never be opened for it (it would wait) */
    if (rc == 0 && S_ISDIR(o.st.st_mode))
        rc = -EISDIR;
    else if (rc == 0 && !S_ISREG(o.st.st_mode))
        rc = -EINVAL;
    if (rc == 0)
        rc = decide_object(&o, VB_ACCESS_WRITE);
    if (rc == 0)
        rc = truncate_object(o.fd, (off_t)req.size);
    drop(&o);
    return rc;
}

/* What the kernel reads of a file to tell how to run it (BINPRM_BUF_SIZE). */
#define EXEC_HEAD 256
/* #! scripts the kernel follows through interpreters that are scripts
 * themselves before it fails with ELOOP (exec_binprm's depth). */
#define MAX_SCRIPTS 5

static int stat_object(struct object *o)
{
    if (!o->have_st && fstat(o->fd, &o->st) != 0)
        return -errno;
    o->have_st = 1;
    return 0;
}

static int spacetab(char c)
{
    return c == ' ' || c == '\t';
}

/* The interpreter a #! script names, read as fs/binfmt_script.c reads it:
 * 1 with its path in `out`; 0 when `o` is not a script, or cannot be read
 * (the kernel then runs it as a program, or fails); -ENOEXEC for a #! line
 * the kernel refuses, and for a relative interpreter (the kernel resolves it
 * from the caller's cwd, which the broker does not have). */
static int script_interpreter(const struct object *o, char out[EXEC_HEAD])
{
    if (!S_ISREG(o->st.st_mode))
        return 0;
    int fd = reopen(o->fd, O_RDONLY | O_NONBLOCK);
    if (fd < 0)
        return 0;
    char head[EXEC_HEAD] = {0};
    ssize_t n = pread(fd, head, sizeof head, 0);
    close(fd);
    if (n < 2 || head[0] != '#' || head[1] != '!')
        return 0;
    const char *line_end = memchr(head, '\n', sizeof head);
    const char *end = line_end ? line_end : head + sizeof head - 1;
    const char *name = head + 2;
    while (name < end && spacetab(*name))
        name++;
    const char *name_end = name;
    while (name_end < end && !spacetab(*name_end) && *name_end != '\0')
        name_end++;
    if (name_end == name || (!line_end && name_end == end))
        return -ENOEXEC; /* no interpreter, or one cut off by the head's end */
    if (*name != '/')
        return -ENOEXEC;
    memcpy(out, name, (size_t)(name_end - name));
    out[name_end - name] = '\0';
    return 1;
}

/* execve, execveat: decided only; the kernel then runs it. A #! script's
 * interpreters (through nested ones) are exec'd by the kernel without a
 * call of their own: each is decided by the exec rules too, as the kernel
 * checks each for exec permission. The reply's decision is the file's, or
 * that of the interpreter refused; its stat is the program the kernel will
 * run (the last interpreter), which the supervisor then verifies. */
static int64_t sys_exec(int dfd)
{
    struct object o;
    int rc = resolve_object(dfd, req.path, req.at_flags, !(req.at_flags & AT_SYMLINK_NOFOLLOW), 0, 0, &o);
    if (rc < 0)
        return rc;
    rc = decide_object(&o, VB_ACCESS_EXEC);
    if (rc == 0)
        rc = stat_object(&o);
    /* the decision on the file itself, for the event (static: the broker's stack may be small) */
    static char decided_canonical[PATH_MAX];
    int decided_verdict = rep.verdict, decided_rule = rep.rule;
    vb_strlcpy(decided_canonical, rep.canonical, sizeof decided_canonical);
    char interpreter[EXEC_HEAD];
    for (int scripts = 0; rc == 0; scripts++) {
        rc = script_interpreter(&o, interpreter);
        if (rc <= 0)
            break;
        drop(&o);
        if (scripts == MAX_SCRIPTS)
            return -ELOOP;
        rc = resolve_object(-1, interpreter, 0, 1, 0, 0, &o);
        if (rc < 0)
            return rc;
        rc = decide_object(&o, VB_ACCESS_EXEC);
        if (rc == 0)
            rc = stat_object(&o);
    }
    if (rc == 0) {
        rep.verdict = decided_verdict;
        rep.rule = decided_rule;
        rep.access = VB_ACCESS_EXEC;
        vb_strlcpy(rep.canonical, decided_canonical, sizeof rep.canonical);
        rep.u.st = o.st;
    }
    drop(&o);
    return rc;
}

/* The name `fd` has under /proc/self/fd, with `rest` after it, as an address
 * (connect and bind take no dirfd): 0, or -ENAMETOOLONG. */
static int via_self_fd(int fd, const char *rest, struct sockaddr_un *addr, socklen_t *len)
{
    char n[SELF_FD_PATH_LEN];
    int dirfd;
    self_fd_link(fd, n, &dirfd); /* fills `n` with the whole path */
    size_t a = strlen(n), b = strlen(rest);
    if (a + b >= sizeof addr->sun_path)
        return -ENAMETOOLONG;
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    memcpy(addr->sun_path, n, a);
    memcpy(addr->sun_path + a, rest, b);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + a + b + 1);
    return 0;
}

static int unhex(const char *text, unsigned char *out, size_t len)
{
    if (strlen(text) != 2 * len)
        return -EINVAL;
    for (size_t i = 0; i < 2 * len; i++) {
        char c = text[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0)
            return -EINVAL;
        out[i / 2] = (unsigned char)(i % 2 ? out[i / 2] | v : v << 4);
    }
    return 0;
}

/* connect, bind of the caller's socket `sock`, to the address copied: a unix
 * path name is decided on, then reached through what was decided on
 * (/proc/self/fd/N, or N/name for a bind), so a name swapped meanwhile
 * changes nothing. */
static int64_t sys_socket_call(int dfd, int sock)
{
    struct sockaddr_storage copy;
    socklen_t len = (socklen_t)req.size;
    if (sock < 0 || req.size > sizeof copy || unhex(req.path2, (unsigned char *)&copy, req.size) != 0)
        return -EINVAL;
    int connecting = req.op == VB_OP_CONNECT;
    if (!req.path[0] && connecting && copy.ss_family != AF_UNIX) {
        /* never waits here (for the whole sandbox's path calls): a blocking caller gets
         * EINPROGRESS from us, and the supervisor waits for the connection */
        int flags = fcntl(sock, F_GETFL);
        int flip = flags >= 0 && !(flags & O_NONBLOCK);
        if (flip)
            fcntl(sock, F_SETFL, flags | O_NONBLOCK);
        int rc = connect(sock, (struct sockaddr *)&copy, len) == 0 ? 0 : -errno;
        if (flip)
            fcntl(sock, F_SETFL, flags);
        return rc;
    }
    if (!req.path[0]) /* no unix path name: nothing the path rules judge */
        return (connecting ? connect(sock, (struct sockaddr *)&copy, len) : bind(sock, (struct sockaddr *)&copy, len))
                   == 0 ? 0 : -errno;
    struct sockaddr_un addr;
    int rc;
    if (connecting) {
        struct object o;
        rc = resolve_object(dfd, req.path, 0, 1, 0, 0, &o);
        if (rc < 0)
            return rc;
        rc = decide_object(&o, VB_ACCESS_WRITE);
        if (rc == 0)
            rc = via_self_fd(o.fd, "", &addr, &len);
        if (rc == 0 && connect(sock, (struct sockaddr *)&addr, len) != 0)
            rc = -errno;
        drop(&o);
        return rc;
    }
    struct name n;
    rc = resolve_parent(dfd, req.path, 0, &n);
    if (rc < 0)
        return rc;
    rc = decide_name(n.canonical, VB_ACCESS_WRITE);
    char rest[NAME_MAX + 3] = "/";
    vb_strlcat(rest, n.base, sizeof rest);
    if (rc == 0)
        rc = via_self_fd(n.parent.fd, rest, &addr, &len);
    if (rc == 0) {
        umask((mode_t)(~req.mode & 0777)); /* the socket file's mode, as the caller's bind makes it */
        if (bind(sock, (struct sockaddr *)&addr, len) != 0)
            rc = -errno;
        umask(0);
    }
    drop(&n.parent);
    return rc;
}

/* --- the loop ------------------------------------------------------------ */

#define MAX_RECV_FDS 4 /* room for more than a request may carry, to tell a bad one */

static void serve(int dfd1, int dfd2)
{
    int fd = -1, replied = 0;
    int64_t result;
    switch (req.op) {
    case VB_OP_OPEN:
        result = sys_open(dfd1, &fd, &replied);
        break;
    case VB_OP_STAT:
        result = sys_stat(dfd1);
        break;
    case VB_OP_STATX:
        result = sys_statx(dfd1);
        break;
    case VB_OP_ACCESS:
        result = sys_access(dfd1);
        break;
    case VB_OP_READLINK:
        result = sys_readlink(dfd1);
        break;
    case VB_OP_UNLINK:
        result = sys_unlink(dfd1);
        break;
    case VB_OP_MKDIR:
        result = sys_mkdir(dfd1);
        break;
    case VB_OP_RENAME:
        result = sys_rename(dfd1, dfd2);
        break;
    case VB_OP_LINK:
        result = sys_link(dfd1, dfd2);
        break;
    case VB_OP_SYMLINK:
        result = sys_symlink(dfd2);
        break;
    case VB_OP_TRUNCATE:
        result = sys_truncate(dfd1);
        break;
    case VB_OP_EXEC:
        result = sys_exec(dfd1);
        break;
    case VB_OP_CONNECT:
    case VB_OP_BIND:
        result = sys_socket_call(dfd1, dfd2);
        break;
    default:
        result = -EINVAL;
        break;
    }
    if (replied)
        return; /* a FIFO helper answers */
    rep.result = result;
    send_reply(result >= 0 ? fd : -1);
    if (fd >= 0)
        close(fd);
}

/* Path calls come in bursts (a build, a tree walk): after each request the
 * broker stays awake a moment, polling, before it sleeps. A sleeping broker
 * is woken by an inter-processor interrupt when the request comes from
 * another CPU, which costs tens of µs in a VM; a polling one sees it at once.
 * Only with more than one CPU, and at most SPIN_NS after the last request.
 * Each poll yields the CPU: the scheduler often puts the supervisor (woken by
 * our reply) on our CPU, where a poll that kept the CPU would hold back the
 * very answer it waits for until the spin ran out (measured: ~50 µs of a
 * ~60 µs open, on one call in three). */
#define SPIN_NS 50000L
static int spin_allowed;

static long elapsed_ns(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000000000L + (now.tv_nsec - since->tv_nsec);
}

static ssize_t receive_request(int sock, struct msghdr *msg)
{
    if (spin_allowed) {
        struct timespec start;
        clock_gettime(CLOCK_MONOTONIC, &start);
        do {
            ssize_t n = recvmsg(sock, msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
            if (n >= 0 || (errno != EAGAIN && errno != EINTR))
                return n;
            sched_yield();
        } while (elapsed_ns(&start) < SPIN_NS);
    }
    return recvmsg(sock, msg, MSG_CMSG_CLOEXEC);
}

__attribute__((noreturn)) void vb_broker_run(const struct vb_plan *plan, int sock)
{
    /* FIFO helpers are reaped by the kernel; a closed peer is an error, not a signal */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGPIPE, &sa, NULL);

    broker_sock = sock;
    rules = plan->path_rules;
    n_rules = rules ? plan->n_path_rules : 0;
    for (size_t i = 0; i < n_rules; i++)
        if (rule_action((int)i) != VB_RULE_ALLOW)
            has_restricting_rules = 1;
    struct stat st;
    if (fstat(sock, &st) == 0) {
        sock_dev = st.st_dev;
        sock_ino = st.st_ino;
    }
    self_fd_dir = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
    cpu_set_t cpus;
    spin_allowed = sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) > 1;
    find_own_proc();
    scan_hard_links(plan);

    for (;;) {
        struct iovec iov = {.iov_base = wire, .iov_len = sizeof wire};
        union {
            char buf[CMSG_SPACE(sizeof(int) * MAX_RECV_FDS)];
            struct cmsghdr align;
        } control;
        struct msghdr msg = {
            .msg_iov = &iov,
            .msg_iovlen = 1,
            .msg_control = control.buf,
            .msg_controllen = sizeof control.buf,
        };
        ssize_t n = receive_request(sock, &msg);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(0); /* the supervisor closed its end (or it broke): done */

        int fds[MAX_RECV_FDS], nfds = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                continue;
            size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                if (nfds < MAX_RECV_FDS)
                    fds[nfds++] = fd;
                else
                    close(fd);
            }
        }

        int malformed = vb_wire_unpack_request(wire, (size_t)n, &req) != 0;
        memset(&rep, 0, sizeof rep);
        rep.token = malformed ? 0 : req.token;
        rep.rule = -1;
        int expected = ((req.dirfds & VB_DIRFD_PATH) != 0) + ((req.dirfds & VB_DIRFD_PATH2) != 0);
        if (malformed || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) ||
            (req.dirfds & ~(VB_DIRFD_PATH | VB_DIRFD_PATH2)) || nfds != expected || req.op < VB_OP_OPEN ||
            req.op > VB_OP_BIND) {
            rep.result = -EINVAL;
            send_reply(-1);
        } else {
            int dfd1 = (req.dirfds & VB_DIRFD_PATH) ? fds[0] : -1;
            int dfd2 = (req.dirfds & VB_DIRFD_PATH2) ? fds[dfd1 >= 0 ? 1 : 0] : -1;
            serve(dfd1, dfd2);
        }
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
    }
}
