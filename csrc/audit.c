/* The audit: one JSON line per interposed call, decoded from the syscall
 * table (names, argument roles) and from the call's own copies of its
 * arguments, so what is written is what was decided on. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "supervise.h"

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

/* --- the record of one call -------------------------------------------------- */

void vb_audit_call(int audit_fd, uint64_t sandbox_id, const struct vb_call *call, const char *decision,
                   const char *rule, const char *resolved, int64_t result)
{
    if (audit_fd < 0)
        return;
    const struct vb_interpose_info *row = call->row;
    const struct vb_broker_request *copy = &call->request;
    struct out o = {.len = 0};
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    putf(&o, "{\"time\": %llu.", (unsigned long long)now.tv_sec);
    putf(&o, "%06llu", (unsigned long long)now.tv_nsec / 1000);
    put(&o, ", \"event\": \"syscall\", \"sandbox\": ");
    putf(&o, "%llu", sandbox_id);
    putf(&o, ", \"pid\": %llu, \"syscall\": ", call->notif.pid);
    put_string(&o, row ? row->name : "?");
    put(&o, ", \"args\": {");
    const char *spec = row ? row->args : "";
    int first = 1, paths = 0, dirfds = 0, creates = 1;
    for (int i = 0; spec[i] && i < 6; i++) {
        uint64_t arg = call->notif.data.args[i];
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
            const char *path = paths ? copy->path2 : copy->path;
            put(&o, paths++ ? "\"path2\": " : "\"path\": ");
            if (path[0] || arg == 0)
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
        case 'h':
            put(&o, "\"flags\": ");
            put_open_flags(&o, (unsigned long)copy->flags);
            putf(&o, ", \"mode\": \"%#llo\"", copy->mode);
            putf(&o, ", \"resolve\": \"0x%llx\"", copy->resolve);
            break;
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
        case 'S':
            put(&o, "\"address\": ");
            put_string(&o, copy->path); /* sys_net.c decodes the sockaddr there */
            break;
        }
    }
    put(&o, "}, \"decision\": ");
    put_string(&o, decision);
    put(&o, ", \"rule\": ");
    put_string(&o, rule);
    if (resolved && resolved[0]) {
        put(&o, ", \"resolved\": ");
        put_string(&o, resolved);
    }
    if (result != INT64_MIN) {
        put(&o, ", \"result\": ");
        putf(&o, "%lld", (unsigned long long)result);
    }
    put(&o, "}\n");
    ssize_t n = write(audit_fd, o.buf, o.len);
    (void)n;
}
