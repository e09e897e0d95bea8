/* Layer 3: the supervisor. One thread, one epoll loop over the seccomp
 * listener fds of every sandbox spawned with it, plus an eventfd to stop.
 *
 * Today every interposed call is audited and allowed. The decision is
 * CONTINUE, which DESIGN.md rule 1 permits only where layers 0-2 already
 * enforce the same outcome: they do, because audit mode adds no rule of its
 * own — the call meets the same mounts, Landlock ruleset and seccomp filter it
 * would have met without the supervisor. What the audit reports of a path is
 * what the process asked for (copied once, after which ID_VALID is checked),
 * not necessarily what the kernel then opened. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#ifndef SECCOMP_USER_NOTIF_FLAG_CONTINUE
#define SECCOMP_USER_NOTIF_FLAG_CONTINUE (1UL << 0)
#endif

struct vb_supervisor {
    int epoll_fd;
    int wake_fd;               /* eventfd: vb_supervisor_stop() */
    atomic_int served;         /* sandboxes whose listener is open */
    struct seccomp_notif_sizes sizes;
};

/* One sandbox: its listener and where its events go. */
struct served {
    int listener;
    int audit_fd;
    uint64_t id;
};

struct vb_supervisor *vb_supervisor_new(void)
{
    struct vb_supervisor *sup = calloc(1, sizeof *sup);
    if (!sup)
        return NULL;
    sup->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    sup->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (sup->epoll_fd < 0 || sup->wake_fd < 0 ||
        syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sup->sizes) != 0 ||
        epoll_ctl(sup->epoll_fd, EPOLL_CTL_ADD, sup->wake_fd, &ev) != 0) {
        int err = errno;
        vb_supervisor_free(sup);
        errno = err;
        return NULL;
    }
    return sup;
}

void vb_supervisor_free(struct vb_supervisor *sup)
{
    if (!sup)
        return;
    if (sup->epoll_fd >= 0)
        close(sup->epoll_fd);
    if (sup->wake_fd >= 0)
        close(sup->wake_fd);
    free(sup);
}

void vb_supervisor_stop(struct vb_supervisor *sup)
{
    uint64_t one = 1;
    ssize_t n = write(sup->wake_fd, &one, sizeof one);
    (void)n;
}

int vb_supervisor_count(struct vb_supervisor *sup)
{
    return atomic_load(&sup->served);
}

int vb_supervisor_add(struct vb_supervisor *sup, int listener, int audit_fd, uint64_t id)
{
    struct served *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->listener = listener;
    s->audit_fd = audit_fd >= 0 ? fcntl(audit_fd, F_DUPFD_CLOEXEC, 3) : -1;
    s->id = id;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
    if (epoll_ctl(sup->epoll_fd, EPOLL_CTL_ADD, listener, &ev) != 0) {
        int err = errno;
        if (s->audit_fd >= 0)
            close(s->audit_fd);
        free(s);
        return -err;
    }
    atomic_fetch_add(&sup->served, 1);
    return 0;
}

static void drop(struct vb_supervisor *sup, struct served *s)
{
    epoll_ctl(sup->epoll_fd, EPOLL_CTL_DEL, s->listener, NULL);
    close(s->listener);
    if (s->audit_fd >= 0)
        close(s->audit_fd);
    free(s);
    atomic_fetch_sub(&sup->served, 1);
}

/* --- reading the tracee ---------------------------------------------------- */

/* Copies the NUL-terminated string at `addr` in `pid`, a page at a time so a
 * string ending just before unmapped memory still reads. */
static int read_string(pid_t pid, uint64_t addr, char *out, size_t cap)
{
    size_t got = 0;
    while (got + 1 < cap) {
        size_t page_left = 4096 - ((addr + got) & 4095);
        size_t want = page_left < cap - 1 - got ? page_left : cap - 1 - got;
        struct iovec local = {out + got, want};
        struct iovec remote = {(void *)(uintptr_t)(addr + got), want};
        ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
        if (n <= 0)
            return -(n < 0 ? errno : EFAULT);
        char *nul = memchr(out + got, '\0', (size_t)n);
        if (nul)
            return 0;
        got += (size_t)n;
    }
    out[cap - 1] = '\0';
    return -ENAMETOOLONG;
}

static int read_memory(pid_t pid, uint64_t addr, void *out, size_t len)
{
    struct iovec local = {out, len};
    struct iovec remote = {(void *)(uintptr_t)addr, len};
    ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    return n == (ssize_t)len ? 0 : -(n < 0 ? errno : EFAULT);
}

/* --- JSON output ------------------------------------------------------------ */

struct out {
    char buf[3 * PATH_MAX + 1024];
    size_t len;
};

static void put(struct out *o, const char *s)
{
    size_t n = strlen(s);
    if (o->len + n < sizeof o->buf) {
        memcpy(o->buf + o->len, s, n);
        o->len += n;
    }
}

static void putf(struct out *o, const char *fmt, unsigned long long v)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, fmt, v);
    put(o, tmp);
}

/* A JSON string; bytes that are not valid UTF-8 become \u00XX escapes. */
static void put_string(struct out *o, const char *s)
{
    put(o, "\"");
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned char c = *p;
        int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        for (int i = 1; i < len; i++)
            if ((p[i] & 0xC0) != 0x80)
                len = 0;
        char tmp[8];
        if (c == '"' || c == '\\') {
            tmp[0] = '\\', tmp[1] = (char)c, tmp[2] = 0;
            put(o, tmp);
        } else if (c < 0x20 || len == 0) {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
            put(o, tmp);
            len = 1;
        } else {
            memcpy(tmp, p, (size_t)len);
            tmp[len] = 0;
            put(o, tmp);
        }
        p += len ? len : 1;
    }
    put(o, "\"");
}

struct flag_name {
    unsigned long value;
    const char *name;
};

/* "A|B|0x40" for the bits of `flags` that `names` knows, then the rest in hex. */
static void format_flags(char *text, size_t cap, unsigned long flags, const struct flag_name *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((flags & names[i].value) == names[i].value) {
            if (text[0])
                vb_strlcat(text, "|", cap);
            vb_strlcat(text, names[i].name, cap);
            flags &= ~names[i].value;
        }
    }
    if (flags) {
        char rest[32];
        snprintf(rest, sizeof rest, "%s0x%lx", text[0] ? "|" : "", flags);
        vb_strlcat(text, rest, cap);
    }
}

#define FLAG(x) {x, #x}
/* Composite flags first, so they are named instead of their parts. */
static const struct flag_name open_flags[] = {
    FLAG(O_TMPFILE), FLAG(O_SYNC), FLAG(O_WRONLY), FLAG(O_RDWR), FLAG(O_CREAT), FLAG(O_EXCL),
    FLAG(O_NOCTTY), FLAG(O_TRUNC), FLAG(O_APPEND), FLAG(O_NONBLOCK), FLAG(O_DSYNC), FLAG(O_DIRECT),
    FLAG(O_DIRECTORY), FLAG(O_NOFOLLOW), FLAG(O_NOATIME), FLAG(O_CLOEXEC), FLAG(O_PATH),
    FLAG(O_LARGEFILE),
};
static const struct flag_name at_flags[] = {
    FLAG(AT_SYMLINK_NOFOLLOW), FLAG(AT_REMOVEDIR), FLAG(AT_SYMLINK_FOLLOW), FLAG(AT_NO_AUTOMOUNT),
    FLAG(AT_EMPTY_PATH),
};

static void put_open_flags(struct out *o, unsigned long flags)
{
    /* O_RDONLY is 0, so it is named from the access mode, not found as a bit */
    char text[512] = "";
    if ((flags & O_ACCMODE) == O_RDONLY && !(flags & O_PATH))
        vb_strlcpy(text, "O_RDONLY", sizeof text);
    format_flags(text, sizeof text, flags, open_flags, VB_ARRAY_LEN(open_flags));
    put_string(o, text);
}

static void put_at_flags(struct out *o, unsigned long flags)
{
    char text[256] = "";
    format_flags(text, sizeof text, flags, at_flags, VB_ARRAY_LEN(at_flags));
    put_string(o, text[0] ? text : "0");
}

/* --- the audit record of one call -------------------------------------------- */

static const struct vb_interpose_info *lookup(int nr)
{
    size_t n;
    const struct vb_interpose_info *rows = vb_interpose_table(&n);
    for (size_t i = 0; i < n; i++)
        if (rows[i].nr == nr)
            return &rows[i];
    return NULL;
}

static void audit(struct served *s, struct seccomp_notif *req, const char *decision, const char *rule)
{
    if (s->audit_fd < 0)
        return;
    const struct vb_interpose_info *row = lookup(req->data.nr);
    struct out o = {.len = 0};
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    putf(&o, "{\"time\": %llu.", (unsigned long long)now.tv_sec);
    putf(&o, "%06llu", (unsigned long long)now.tv_nsec / 1000);
    put(&o, ", \"event\": \"syscall\", \"sandbox\": ");
    putf(&o, "%llu", s->id);
    putf(&o, ", \"pid\": %llu, \"syscall\": ", req->pid);
    put_string(&o, row ? row->name : "?");
    put(&o, ", \"args\": {");
    const char *spec = row ? row->args : "";
    int first = 1, paths = 0, dirfds = 0, creates = 1;
    for (int i = 0; spec[i] && i < 6; i++) {
        uint64_t arg = req->data.args[i];
        if (spec[i] == '-' || (spec[i] == 'm' && !creates))
            continue;
        put(&o, first ? "" : ", ");
        first = 0;
        switch (spec[i]) {
        case 'd':
            put(&o, dirfds++ ? "\"dirfd2\": " : "\"dirfd\": ");
            if ((int)arg == AT_FDCWD)
                put(&o, "\"AT_FDCWD\"");
            else
                putf(&o, "%llu", (unsigned long long)(int)arg);
            break;
        case 'p': {
            char path[PATH_MAX];
            put(&o, paths++ ? "\"path2\": " : "\"path\": ");
            if (read_string((pid_t)req->pid, arg, path, sizeof path) == 0)
                put_string(&o, path);
            else
                put(&o, "null");
            break;
        }
        case 'f':
            put(&o, "\"flags\": ");
            put_open_flags(&o, (unsigned long)arg);
            creates = (arg & O_CREAT) || (arg & O_TMPFILE) == O_TMPFILE; /* else mode is ignored */
            break;
        case 'h': {
            struct open_how how;
            put(&o, "\"flags\": ");
            if (read_memory((pid_t)req->pid, arg, &how, sizeof how) == 0) {
                put_open_flags(&o, (unsigned long)how.flags);
                putf(&o, ", \"mode\": \"%#llo\"", how.mode);
                putf(&o, ", \"resolve\": \"0x%llx\"", how.resolve);
            } else {
                put(&o, "null");
            }
            break;
        }
        case 'm':
            putf(&o, "\"mode\": \"%#llo\"", arg & 07777);
            break;
        case 'a':
            put(&o, "\"at_flags\": ");
            put_at_flags(&o, (unsigned long)arg);
            break;
        case 'i':
            putf(&o, "\"arg\": %lld", (unsigned long long)(long long)(int)arg);
            break;
        case 'x':
            putf(&o, "\"arg\": \"0x%llx\"", arg);
            break;
        }
    }
    put(&o, "}, \"decision\": ");
    put_string(&o, decision);
    put(&o, ", \"rule\": ");
    put_string(&o, rule);
    put(&o, "}\n");
    /* The paths were read before this check: if the process died or the call
     * was interrupted meanwhile, the record describes nothing that happened. */
    if (ioctl(s->listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &req->id) != 0)
        return;
    ssize_t n = write(s->audit_fd, o.buf, o.len);
    (void)n;
}

/* --- the loop --------------------------------------------------------------- */

static void serve(struct vb_supervisor *sup, struct served *s, struct seccomp_notif *req,
                  struct seccomp_notif_resp *resp)
{
    memset(req, 0, sup->sizes.seccomp_notif);
    if (ioctl(s->listener, SECCOMP_IOCTL_NOTIF_RECV, req) != 0)
        return; /* ENOENT: the caller went away before we got to it */
    audit(s, req, "allow", "audit: no interposed rule");
    memset(resp, 0, sup->sizes.seccomp_notif_resp);
    resp->id = req->id;
    /* SAFETY: audit mode decides nothing; layers 0-2 enforce the outcome (see top). */
    resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    ioctl(s->listener, SECCOMP_IOCTL_NOTIF_SEND, resp); /* ENOENT: it died meanwhile: fine */
}

int vb_supervisor_run(struct vb_supervisor *sup)
{
    struct seccomp_notif *req = calloc(1, sup->sizes.seccomp_notif);
    struct seccomp_notif_resp *resp = calloc(1, sup->sizes.seccomp_notif_resp);
    if (!req || !resp) {
        free(req);
        free(resp);
        return -ENOMEM;
    }
    int rc = 0;
    for (;;) {
        struct epoll_event events[16];
        int n = epoll_wait(sup->epoll_fd, events, 16, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        int stop = 0;
        for (int i = 0; i < n; i++) {
            struct served *s = events[i].data.ptr;
            if (!s) {
                stop = 1;
                continue;
            }
            if (events[i].events & EPOLLIN)
                serve(sup, s, req, resp);
            else if (events[i].events & (EPOLLHUP | EPOLLERR))
                drop(sup, s); /* every process using this filter is gone */
        }
        if (stop)
            break;
    }
    free(req);
    free(resp);
    return rc;
}
