/* Layer 3: the supervisor. One thread, one epoll loop over the seccomp
 * listener and the broker socket of every sandbox spawned with it, plus two
 * eventfds: one to stop, one for answers from the asking side.
 *
 * A sandbox without path rules is audited only: each interposed call is
 * written to its audit fd and CONTINUEd. DESIGN.md rule 1 permits CONTINUE
 * only where layers 0-2 already enforce the same outcome, and they do: the
 * supervisor adds no rule of its own then, so the call meets the same mounts,
 * Landlock ruleset and seccomp filter it would have met without it.
 *
 * A sandbox with path rules has a broker (broker.h). A call's arguments are
 * copied once; its handler (sys_fs.c) turns them into a broker request with
 * the directories its relative paths start from; the broker resolves,
 * decides by the rules and performs; the reply becomes the call's answer: an
 * fd through SECCOMP_IOCTL_NOTIF_ADDFD, a struct written back, or an errno.
 * The loop never waits for a broker or an asker: requests go out and replies
 * come back as events, so a slow call (a FIFO waiting for its peer, a person
 * deciding) holds only its own caller, never the other sandboxes. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "supervise.h"

#ifndef SECCOMP_USER_NOTIF_FLAG_CONTINUE
#define SECCOMP_USER_NOTIF_FLAG_CONTINUE (1UL << 0)
#endif
#ifndef SECCOMP_ADDFD_FLAG_SEND
#define SECCOMP_ADDFD_FLAG_SEND (1UL << 1)
#endif
#ifndef SECCOMP_ADDFD_FLAG_SETFD
#define SECCOMP_ADDFD_FLAG_SETFD (1UL << 0)
#endif
#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif

/* Destinations a sandbox's deny notes name at most (each is said once). */
#define MAX_NOTED 64
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS /* Linux 6.6 */
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

/* pidfds of recent callers kept open (the pidfd cache below): a few, whatever
 * the number of sandboxes, so that the host's fd table does not grow with them. */
#define CALLER_PIDFDS 16

/* Requests a sandbox may have at its broker at once. Both directions of the
 * socket must hold them all (a request is ~12 KiB, a reply ~8 KiB, the
 * default socket buffer ~208 KiB) so that neither side ever blocks on a send
 * while the other blocks on its own; the rest wait here, in order. */
#define MAX_AT_BROKER 12

enum watch_kind { WATCH_STOP, WATCH_ANSWERS, WATCH_LISTENER, WATCH_BROKER };

/* What an epoll event is about. */
struct watch {
    enum watch_kind kind;
    struct served *sandbox;
};

/* An ask answered "always": later calls reaching `path` with `access` go ahead. */
struct grant {
    unsigned access;
    char *path;
};

/* An exec the rules allowed and the kernel then ran by its path again: which
 * program that turned out to be is verified at the process's next call. The
 * exec may come from any thread; once it succeeds the process's only thread
 * has the tgid as its id, so a check is keyed by both. */
struct exec_check {
    uint32_t tid, tgid;              /* host ids of the exec'ing thread and its process */
    unsigned long long started;      /* the process's start time: a reused pid is another process */
    dev_t before_dev, runs_dev;      /* /proc/TGID/exe before; the program the checked file runs
                                        (itself, or the interpreter of its #! line: broker.c) */
    ino_t before_ino, runs_ino;
    struct exec_check *next;
};

/* An address one of the allowlist's names resolved to (vb_supervisor_pin).
 * Pins are added by the resolver's thread while the loop reads them: the list
 * only grows, and each pin is complete before it is published (release, read
 * with acquire). They are freed with their sandbox. */
struct pin {
    struct vb_net_rule rule;   /* origin owned */
    char *name;                /* the name resolved: said when the address is refused */
    struct pin *next;
};

/* One sandbox. Built by vb_supervisor_add (the spawning thread), then owned
 * by the loop thread (its pins excepted). */
struct served {
    struct vb_supervisor *sup;
    struct watch on_listener, on_broker;
    int listener;
    int broker;                /* -1: audit only, or the broker is gone */
    int emulate;               /* path rules: calls go through the broker */
    int audit_fd;
    uint64_t id;
    int ask_upcall;
    char **origins;            /* of the plan's path rules, for events */
    size_t n_rules;
    struct grant *always;
    size_t n_always;
    struct vb_net_rule *net_allow; /* [net].allow, origins owned */
    size_t n_net_allow;
    int net_filtered;          /* [net].allow has rules (addresses, or names to pin) */
    _Atomic(struct pin *) pins;/* the names' addresses, newest first */
    struct vb_net_counters *counters; /* held: the connections made for it are counted */
    struct vb_clock *clock;    /* owned: the time view's clock, a page shared with the init */
    size_t n_pins;             /* under vb_supervisor.lock */
    int deny_note_fd;          /* -1, or where "viewbox: denied connect ..." notes go */
    char *noted[MAX_NOTED];    /* destinations already noted there */
    size_t n_noted;
    int at_broker;             /* requests sent, not yet answered */
    struct exec_check *exec_checks;
    size_t n_exec_checks;
    struct vb_call *backlog;   /* requests waiting for a slot, oldest first */
    int dead;
    struct served *next;       /* every served sandbox, for stop and answers */
};

/* A question for the asking side, and its answer coming back. */
struct question {
    struct vb_request request;
    struct served *sandbox;
    int taken;                 /* handed out by vb_supervisor_next_request */
    struct question *next;
};

struct answer {
    uint64_t token;
    int answer;
    struct answer *next;
};

/* A pidfd of thread `tid`, opened for an earlier call of it. */
struct caller_pidfd {
    uint32_t tid;
    int fd;                    /* -1: none */
    struct served *sandbox;    /* whose call it was: closed when that sandbox is dropped */
};

struct vb_supervisor {
    int epoll_fd;
    int wake_fd;               /* eventfd: vb_supervisor_stop() */
    int answer_fd;             /* eventfd: answers are queued */
    int request_fd;            /* eventfd: questions wait (read by the asking side) */
    struct watch on_wake, on_answers;
    atomic_int served;         /* sandboxes whose listener is open */
    struct seccomp_notif_sizes sizes;
    uint64_t next_token;
    struct vb_call *calls;     /* at a broker or an asker (loop thread only) */
    struct vb_broker_reply *reply; /* receive buffer (loop thread only) */
    int spin;                  /* more than one CPU: wait for broker replies awake */
    struct caller_pidfd pidfds[CALLER_PIDFDS]; /* by tid % CALLER_PIDFDS (loop thread only) */
    pthread_mutex_t lock;      /* guards the fields below */
    struct served *sandboxes;
    struct question *questions;
    struct answer *answers;
};

/* --- lifecycle ---------------------------------------------------------------- */

struct vb_supervisor *vb_supervisor_new(void)
{
    struct vb_supervisor *sup = calloc(1, sizeof *sup);
    if (!sup)
        return NULL;
    pthread_mutex_init(&sup->lock, NULL);
    sup->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    sup->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    sup->answer_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    sup->request_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    sup->reply = calloc(1, sizeof *sup->reply);
    for (size_t i = 0; i < CALLER_PIDFDS; i++)
        sup->pidfds[i].fd = -1;
    cpu_set_t cpus;
    sup->spin = sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) > 1;
    sup->on_wake.kind = WATCH_STOP;
    sup->on_answers.kind = WATCH_ANSWERS;
    struct epoll_event wake = {.events = EPOLLIN, .data.ptr = &sup->on_wake};
    struct epoll_event answers = {.events = EPOLLIN, .data.ptr = &sup->on_answers};
    if (sup->epoll_fd < 0 || sup->wake_fd < 0 || sup->answer_fd < 0 || sup->request_fd < 0 || !sup->reply ||
        syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sup->sizes) != 0 ||
        epoll_ctl(sup->epoll_fd, EPOLL_CTL_ADD, sup->wake_fd, &wake) != 0 ||
        epoll_ctl(sup->epoll_fd, EPOLL_CTL_ADD, sup->answer_fd, &answers) != 0) {
        int err = errno ? errno : ENOMEM;
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
    int fds[] = {sup->epoll_fd, sup->wake_fd, sup->answer_fd, sup->request_fd};
    for (size_t i = 0; i < VB_ARRAY_LEN(fds); i++)
        if (fds[i] > 0)
            close(fds[i]);
    for (size_t i = 0; i < CALLER_PIDFDS; i++)
        if (sup->pidfds[i].fd >= 0)
            close(sup->pidfds[i].fd);
    free(sup->reply);
    pthread_mutex_destroy(&sup->lock);
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

static void close_served_fds(struct served *s)
{
    if (s->listener >= 0)
        close(s->listener);
    if (s->broker >= 0)
        close(s->broker);
    if (s->audit_fd >= 0)
        close(s->audit_fd);
    if (s->deny_note_fd >= 0)
        close(s->deny_note_fd);
    s->listener = s->broker = s->audit_fd = s->deny_note_fd = -1;
}

static void forget_exec(struct exec_check **at)
{
    struct exec_check *c = *at;
    *at = c->next;
    free(c);
}

static void free_served(struct served *s)
{
    vb_net_counters_release(s->counters);
    if (s->clock)
        munmap(s->clock, sizeof *s->clock);
    while (s->exec_checks)
        forget_exec(&s->exec_checks);
    for (size_t i = 0; i < s->n_rules; i++)
        free(s->origins[i]);
    free(s->origins);
    for (size_t i = 0; i < s->n_always; i++)
        free(s->always[i].path);
    free(s->always);
    for (size_t i = 0; i < s->n_net_allow; i++)
        free((char *)s->net_allow[i].origin);
    free(s->net_allow);
    for (struct pin *p = atomic_load(&s->pins), *next; p; p = next) {
        next = p->next;
        free((char *)p->rule.origin);
        free(p->name);
        free(p);
    }
    for (size_t i = 0; i < s->n_noted; i++)
        free(s->noted[i]);
    free(s);
}

int vb_supervisor_add(struct vb_supervisor *sup, int listener, int broker, const struct vb_plan *plan,
                      struct vb_net_counters *counters, struct vb_clock *clock)
{
    struct served *s = calloc(1, sizeof *s);
    int err = ENOMEM;
    if (!s)
        goto fail;
    s->sup = sup;
    s->clock = clock;
    if (counters) {
        vb_net_counters_hold(counters);
        s->counters = counters;
    }
    s->listener = listener;
    s->broker = broker;
    s->emulate = broker >= 0;
    s->audit_fd = plan->audit_fd >= 0 ? fcntl(plan->audit_fd, F_DUPFD_CLOEXEC, 3) : -1;
    s->deny_note_fd = plan->deny_note_fd >= 0 ? fcntl(plan->deny_note_fd, F_DUPFD_CLOEXEC, 3) : -1;
    if (plan->n_net_allow) {
        s->net_allow = calloc(plan->n_net_allow, sizeof *s->net_allow);
        if (!s->net_allow)
            goto fail;
        for (size_t i = 0; i < plan->n_net_allow; i++) {
            s->net_allow[i] = plan->net_allow[i];
            s->net_allow[i].origin = strdup(plan->net_allow[i].origin ? plan->net_allow[i].origin : "");
            s->n_net_allow = i + 1;
            if (!s->net_allow[i].origin)
                goto fail;
        }
    }
    s->net_filtered = plan->n_net_allow > 0 || plan->resolver;
    s->id = plan->sandbox_id;
    s->ask_upcall = plan->ask_upcall;
    s->on_listener = (struct watch){WATCH_LISTENER, s};
    s->on_broker = (struct watch){WATCH_BROKER, s};
    if (plan->n_path_rules) {
        s->origins = calloc(plan->n_path_rules, sizeof *s->origins);
        if (!s->origins)
            goto fail;
        s->n_rules = plan->n_path_rules;
        for (size_t i = 0; i < plan->n_path_rules; i++)
            if (!(s->origins[i] = strdup(plan->path_rules[i].origin ? plan->path_rules[i].origin : "")))
                goto fail;
    }
    /* The caller waits for us and we for it: ask the kernel to hand the CPU
     * over on each wake-up instead of waking the other side on another CPU
     * (an inter-processor interrupt, dear in a VM). Older kernels: EINVAL, fine. */
    uint64_t sync_wake = SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP;
    ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, sync_wake);
    if (broker >= 0) {
        /* room for MAX_AT_BROKER requests, as far as the system lets us */
        int bytes = 1 << 20;
        setsockopt(broker, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
        setsockopt(broker, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
    }
    pthread_mutex_lock(&sup->lock);
    s->next = sup->sandboxes;
    sup->sandboxes = s;
    pthread_mutex_unlock(&sup->lock);
    struct epoll_event on_listener = {.events = EPOLLIN, .data.ptr = &s->on_listener};
    struct epoll_event on_broker = {.events = EPOLLIN, .data.ptr = &s->on_broker};
    if ((broker >= 0 && epoll_ctl(sup->epoll_fd, EPOLL_CTL_ADD, broker, &on_broker) != 0) ||
        epoll_ctl(sup->epoll_fd, EPOLL_CTL_ADD, listener, &on_listener) != 0) {
        err = errno;
        /* not served: take it back out before the loop can see it */
        epoll_ctl(sup->epoll_fd, EPOLL_CTL_DEL, broker, NULL);
        pthread_mutex_lock(&sup->lock);
        struct served **at = &sup->sandboxes;
        while (*at != s)
            at = &(*at)->next;
        *at = s->next;
        pthread_mutex_unlock(&sup->lock);
        close_served_fds(s);
        free_served(s);
        return -err;
    }
    atomic_fetch_add(&sup->served, 1);
    return 0;
fail:
    if (s) {
        close_served_fds(s);
        free_served(s);
    } else {
        close(listener);
        if (broker >= 0)
            close(broker);
        if (clock)
            munmap(clock, sizeof *clock);
    }
    return -err;
}

const struct vb_clock *vb_call_clock(const struct vb_call *call)
{
    return call->sandbox->clock;
}

/* --- the network policy ----------------------------------------------------------- */

int vb_net_filtered(const struct vb_call *call)
{
    return call->sandbox->net_filtered;
}

int vb_path_rules(const struct vb_call *call)
{
    return call->sandbox->emulate;
}

static int prefix_matches(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, whole) != 0)
        return 0;
    if (!rest)
        return 1;
    uint8_t mask = (uint8_t)(0xFF << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

static int rule_matches(const struct vb_net_rule *r, int family, const uint8_t *address, unsigned port)
{
    return r->family == family && port >= r->port_min && port <= r->port_max &&
           prefix_matches(r->address, address, r->prefix);
}

const struct vb_net_rule *vb_net_allowed(const struct vb_call *call, int family, const uint8_t *address,
                                         unsigned port)
{
    const struct served *s = call->sandbox;
    for (size_t i = 0; i < s->n_net_allow; i++)
        if (rule_matches(&s->net_allow[i], family, address, port))
            return &s->net_allow[i];
    for (const struct pin *p = atomic_load_explicit(&s->pins, memory_order_acquire); p; p = p->next)
        if (rule_matches(&p->rule, family, address, port))
            return &p->rule;
    return NULL;
}

const char *vb_net_name(const struct vb_call *call, int family, const uint8_t *address)
{
    for (const struct pin *p = atomic_load_explicit(&call->sandbox->pins, memory_order_acquire); p; p = p->next)
        if (p->rule.family == family && prefix_matches(p->rule.address, address, p->rule.prefix))
            return p->name;
    return NULL;
}

static int same_rule(const struct vb_net_rule *a, const struct vb_net_rule *b)
{
    return a->family == b->family && a->prefix == b->prefix && a->port_min == b->port_min &&
           a->port_max == b->port_max && memcmp(a->address, b->address, sizeof a->address) == 0;
}

int vb_supervisor_pin(struct vb_supervisor *sup, uint64_t sandbox_id, const struct vb_net_rule *rule,
                      const char *name)
{
    if ((rule->family != AF_INET && rule->family != AF_INET6) ||
        rule->prefix > (rule->family == AF_INET ? 32u : 128u))
        return -EINVAL;
    pthread_mutex_lock(&sup->lock);
    struct served *s = sup->sandboxes;
    while (s && s->id != sandbox_id)
        s = s->next;
    int rc = 0;
    if (!s) {
        rc = -ESRCH;
        goto out;
    }
    /* an address two names resolve to (a CDN's) is pinned once per name: the newest
     * pin names it in refusals and events, as the name most recently looked up */
    for (const struct pin *p = atomic_load(&s->pins); p; p = p->next)
        if (same_rule(&p->rule, rule) && strcmp(p->name, name ? name : "") == 0)
            goto out;
    if (s->n_pins >= VB_MAX_PINS) {
        rc = -ENOSPC;
        goto out;
    }
    struct pin *pin = calloc(1, sizeof *pin);
    char *origin = strdup(rule->origin ? rule->origin : "");
    char *copy = strdup(name ? name : "");
    if (!pin || !origin || !copy) {
        free(pin);
        free(origin);
        free(copy);
        rc = -ENOMEM;
        goto out;
    }
    pin->rule = *rule;
    pin->rule.origin = origin;
    pin->name = copy;
    pin->next = atomic_load(&s->pins);
    atomic_store_explicit(&s->pins, pin, memory_order_release);
    s->n_pins++;
out:
    pthread_mutex_unlock(&sup->lock);
    return rc;
}

int vb_caller_pidfd(const struct vb_call *call)
{
    /* the notification names the calling thread: its own pidfd (Linux 6.9), or, for
     * a process's main thread, the process's */
    int fd = (int)syscall(SYS_pidfd_open, call->notif.pid, PIDFD_THREAD);
    if (fd < 0)
        fd = (int)syscall(SYS_pidfd_open, call->notif.pid, 0);
    return fd < 0 ? -errno : fd;
}

/* The first refusal of each destination, said on the deny-note fd (the CLI's stderr). */
static void note_denied(struct served *s, const char *destination, const char *rule)
{
    if (s->deny_note_fd < 0 || s->n_noted >= MAX_NOTED)
        return;
    for (size_t i = 0; i < s->n_noted; i++)
        if (strcmp(s->noted[i], destination) == 0)
            return;
    if (!(s->noted[s->n_noted] = strdup(destination)))
        return;
    s->n_noted++;
    char line[512];
    int n = snprintf(line, sizeof line, "viewbox: denied connect to %s: %s\n", destination, rule);
    ssize_t w = write(s->deny_note_fd, line, n < (int)sizeof line ? (size_t)n : sizeof line - 1);
    (void)w;
}

/* --- reading and writing the tracee ---------------------------------------------
 * The notification's pid is the calling thread. process_vm_readv may read
 * another process if that thread died and its pid was reused: every read is
 * followed by SECCOMP_IOCTL_NOTIF_ID_VALID before anything read is used. */

static int read_remote(pid_t pid, uint64_t addr, void *out, size_t len)
{
    struct iovec local = {out, len};
    struct iovec remote = {(void *)(uintptr_t)addr, len};
    ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    return n == (ssize_t)len ? 0 : -(n < 0 ? errno : EFAULT);
}

int vb_read_string(const struct vb_call *call, uint64_t addr, char *out, size_t cap)
{
    /* a page at a time, so a string ending just before unmapped memory reads */
    size_t got = 0;
    pid_t pid = (pid_t)call->notif.pid;
    while (got + 1 < cap) {
        size_t page_left = 4096 - ((addr + got) & 4095);
        size_t want = page_left < cap - 1 - got ? page_left : cap - 1 - got;
        struct iovec local = {out + got, want};
        struct iovec remote = {(void *)(uintptr_t)(addr + got), want};
        ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
        if (n <= 0)
            return -(n < 0 ? errno : EFAULT);
        if (memchr(out + got, '\0', (size_t)n))
            return 0;
        got += (size_t)n;
    }
    out[cap - 1] = '\0';
    return -ENAMETOOLONG;
}

int vb_read_memory(const struct vb_call *call, uint64_t addr, void *out, size_t len)
{
    return read_remote((pid_t)call->notif.pid, addr, out, len);
}

static int call_valid(const struct vb_call *call)
{
    uint64_t id = call->notif.id;
    return ioctl(call->sandbox->listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

int vb_call_valid(const struct vb_call *call)
{
    return call_valid(call);
}

int vb_write_memory(const struct vb_call *call, uint64_t addr, const void *data, size_t len)
{
    /* Checked first: while the call is valid its thread waits in the kernel
     * for this answer and cannot exit, so the pid is still that thread's
     * (a pid is reused only after its task is gone and pid_max wrapped). */
    if (!call_valid(call))
        return -ESRCH;
    struct iovec local = {(void *)data, len};
    struct iovec remote = {(void *)(uintptr_t)addr, len};
    ssize_t n = process_vm_writev((pid_t)call->notif.pid, &local, 1, &remote, 1, 0);
    return n == (ssize_t)len ? 0 : -(n < 0 ? errno : EFAULT);
}

/* A fresh pidfd of the calling thread in `slot`: 0, or -errno. */
static int reopen_caller_pidfd(struct caller_pidfd *slot, const struct vb_call *call)
{
    if (slot->fd >= 0)
        close(slot->fd);
    slot->tid = call->notif.pid;
    slot->sandbox = call->sandbox;
    slot->fd = vb_caller_pidfd(call);
    if (slot->fd >= 0)
        return 0;
    int err = slot->fd;
    slot->fd = -1;
    return err;
}

/* The caller's fd `fd`, through a pidfd of the calling thread kept from its
 * earlier calls: getfd + fstat + close measured ~0.55 µs here, where opening
 * /proc/PID/fd/N (a procfs walk) + fstat + close took ~1.3 µs, and a
 * pidfd_open per call would add ~0.5 µs again. A cached pidfd names the task
 * it was opened for, never a number: once that task is gone pidfd_getfd
 * fails with ESRCH and the tid (which may now be another thread's) gets a
 * fresh pidfd, so a reused tid never reaches another task. Where pidfds
 * cannot do it (a kernel without PIDFD_THREAD for a thread, EPERM) /proc
 * does as before. */
int vb_caller_fd(const struct vb_call *call, int fd)
{
    if (fd < 0)
        return vb_open_dirfd(call, fd); /* AT_FDCWD: its working directory */
    struct caller_pidfd *slot = &call->sandbox->sup->pidfds[call->notif.pid % CALLER_PIDFDS];
    int fresh = 0, rc = 0;
    if (slot->fd < 0 || slot->tid != call->notif.pid) {
        rc = reopen_caller_pidfd(slot, call);
        fresh = 1;
    }
    while (rc == 0) {
        int got = (int)syscall(SYS_pidfd_getfd, slot->fd, fd, 0);
        if (got >= 0)
            return got;
        rc = -errno;
        if (rc != -ESRCH || fresh)
            break;
        /* the task this pidfd was opened for ended: the tid names another now */
        rc = reopen_caller_pidfd(slot, call);
        fresh = 1;
    }
    if (rc == -EBADF || rc == -ESRCH)
        return rc; /* no such fd; or the caller is gone, and the call with it */
    return vb_open_dirfd(call, fd);
}

int vb_open_dirfd(const struct vb_call *call, int dirfd)
{
    char path[64];
    if (dirfd == AT_FDCWD)
        snprintf(path, sizeof path, "/proc/%u/cwd", call->notif.pid);
    else if (dirfd < 0)
        return -EBADF;
    else
        snprintf(path, sizeof path, "/proc/%u/fd/%d", call->notif.pid, dirfd);
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0)
        return dirfd == AT_FDCWD ? -errno : -EBADF;
    return fd;
}

/* Copies the call's pointer arguments once, as the table describes them:
 * paths into request.path / path2, an open_how into flags / mode / resolve.
 * A NULL path reads as "" (statx and fstatat take NULL with AT_EMPTY_PATH). */
static int copy_arguments(struct vb_call *call)
{
    const char *spec = call->row->args;
    int paths = 0, rc = 0;
    for (int i = 0; spec[i] && i < 6; i++) {
        uint64_t arg = call->notif.data.args[i];
        if (spec[i] == 'p') {
            char *out = paths++ ? call->request.path2 : call->request.path;
            int r = arg ? vb_read_string(call, arg, out, PATH_MAX) : 0;
            if (r < 0) {
                out[0] = '\0';
                rc = rc ? rc : r;
            }
        } else if (spec[i] == 'h') {
            struct open_how how;
            uint64_t size = i < 5 ? call->notif.data.args[i + 1] : 0;
            memset(&how, 0, sizeof how);
            if (size < sizeof how) {
                rc = rc ? rc : -EINVAL;
                continue;
            }
            int r = vb_read_memory(call, arg, &how, sizeof how);
            if (r == 0 && size > sizeof how) {
                /* a newer struct: fine only if what we do not know is zero */
                unsigned char rest[512];
                if (size - sizeof how > sizeof rest)
                    r = -E2BIG;
                else if ((r = vb_read_memory(call, arg + sizeof how, rest, size - sizeof how)) == 0)
                    for (size_t k = 0; k < size - sizeof how; k++)
                        if (rest[k])
                            r = -E2BIG;
            }
            if (r < 0)
                rc = rc ? rc : r;
            call->request.flags = how.flags;
            call->request.mode = how.mode;
            call->request.resolve = how.resolve;
        }
    }
    return rc;
}

/* --- answering a call ---------------------------------------------------------- */

static void send_response(struct vb_call *call, int64_t value, int error, uint32_t flags)
{
    struct seccomp_notif_resp resp;
    memset(&resp, 0, sizeof resp);
    resp.id = call->notif.id;
    resp.val = value;
    resp.error = error;
    resp.flags = flags;
    ioctl(call->sandbox->listener, SECCOMP_IOCTL_NOTIF_SEND, &resp); /* ENOENT: it died meanwhile: fine */
}

static void free_call(struct vb_call *call)
{
    for (int i = 0; i < 2; i++)
        if (call->fds[i] >= 0)
            close(call->fds[i]);
    free(call);
}

static const char *origin_of(const struct served *s, int rule)
{
    return rule >= 0 && (size_t)rule < s->n_rules ? s->origins[rule] : "no rule matched";
}

/* Answers with an errno or a value, writes the event, frees the call. */
static void finish(struct vb_call *call, int64_t result, const char *decision, const char *rule,
                   const char *resolved)
{
    if (result < 0)
        send_response(call, 0, (int)result, 0);
    else
        send_response(call, result, 0, 0);
    vb_audit_call(call->sandbox->audit_fd, call->sandbox->id, call, decision, rule, resolved, result);
    free_call(call);
}

/* --- network calls (sys_net.c decides) ---------------------------------------------- */

/* Puts the supervisor's connected socket (fds[0]) in place of the caller's fd and
 * answers `value`. */
static void replace_fd(struct vb_call *call, int64_t value, const char *rule)
{
    struct seccomp_notif_addfd addfd;
    memset(&addfd, 0, sizeof addfd);
    addfd.id = call->notif.id;
    addfd.flags = SECCOMP_ADDFD_FLAG_SETFD;
    addfd.srcfd = (uint32_t)call->fds[0];
    addfd.newfd = (uint32_t)call->notif.data.args[0];
    addfd.newfd_flags = (uint32_t)call->new_fd_flags;
    if (ioctl(call->sandbox->listener, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd) < 0) {
        int err = errno;
        if (err == ENOENT) { /* the caller went away */
            free_call(call);
            return;
        }
        value = -err;
    } else if (call->sandbox->counters) {
        atomic_fetch_add_explicit(&call->sandbox->counters->connections_out, 1, memory_order_relaxed);
    }
    char destination[PATH_MAX];
    vb_strlcpy(destination, call->request.path, sizeof destination);
    finish(call, value, "allow", rule, destination);
}

static void to_broker(struct vb_supervisor *sup, struct vb_call *call);

static void decide_net(struct vb_supervisor *sup, struct vb_call *call, struct vb_decision d)
{
    struct served *s = call->sandbox;
    char destination[PATH_MAX];
    vb_strlcpy(destination, call->request.path, sizeof destination);
    switch (d.kind) {
    case VB_DECIDE_DENY:
        note_denied(s, destination, d.rule);
        finish(call, -d.value, "deny", d.rule, destination);
        return;
    case VB_DECIDE_ERRNO:
        finish(call, -d.value, "allow", d.rule ? d.rule : "connect failed", destination);
        return;
    case VB_DECIDE_RETURN:
        finish(call, d.value, "allow", d.rule ? d.rule : "", destination);
        return;
    case VB_DECIDE_CONTINUE:
        vb_audit_call(s->audit_fd, s->id, call, "allow", "the sandbox's own network", destination, INT64_MIN);
        /* SAFETY: sys_connect returns CONTINUE only for what the sandbox's own network
         * namespace holds (layer 0): see CONTINUE_INSIDE in sys_net.c */
        send_response(call, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE);
        free_call(call);
        return;
    case VB_DECIDE_REPLACE_FD:
        replace_fd(call, d.value, d.rule);
        return;
    case VB_DECIDE_CONNECTING: {
        /* a blocking connect: held until the supervisor's own connect is done, while
         * the loop serves everyone else; the epoll event carries the call's token */
        call->token = ++sup->next_token;
        vb_strlcpy(call->request.granted, d.rule, sizeof call->request.granted);
        struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (call->token << 1) | 1};
        if (epoll_ctl(sup->epoll_fd, EPOLL_CTL_ADD, call->fds[0], &ev) != 0) {
            finish(call, -errno, "allow", d.rule, destination);
            return;
        }
        call->waiting = VB_WAIT_CONNECT;
        call->next = sup->calls;
        sup->calls = call;
        return;
    }
    case VB_DECIDE_BROKER: /* a unix socket's connect or bind under path rules */
        to_broker(sup, call);
        return;
    }
    finish(call, -ENOSYS, "deny", "not a network decision", destination);
}

static struct vb_call *find_call(struct vb_supervisor *sup, uint64_t token, int waiting);
static void unlink_call(struct vb_supervisor *sup, struct vb_call *call);

/* The supervisor's connect for a held call finished (or failed). */
static void connect_done(struct vb_supervisor *sup, uint64_t token)
{
    struct vb_call *call = find_call(sup, token, VB_WAIT_CONNECT);
    if (!call)
        return; /* its sandbox was dropped: its socket is closed */
    unlink_call(sup, call);
    epoll_ctl(sup->epoll_fd, EPOLL_CTL_DEL, call->fds[0], NULL);
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(call->fds[0], SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    char rule[PATH_MAX];
    vb_strlcpy(rule, call->request.granted, sizeof rule);
    if (call->request.op == VB_OP_CONNECT) { /* the broker connected the caller's own socket */
        finish(call, -err, "allow", rule, NULL);
        return;
    }
    if (err) {
        char destination[PATH_MAX];
        vb_strlcpy(destination, call->request.path, sizeof destination);
        finish(call, -err, "allow", rule, destination);
        return;
    }
    replace_fd(call, 0, rule);
}

/* --- the broker ------------------------------------------------------------------- */

static void unlink_call(struct vb_supervisor *sup, struct vb_call *call)
{
    for (struct vb_call **at = &sup->calls; *at; at = &(*at)->next)
        if (*at == call) {
            *at = call->next;
            call->next = NULL;
            return;
        }
}

static struct vb_call *find_call(struct vb_supervisor *sup, uint64_t token, int waiting)
{
    for (struct vb_call *c = sup->calls; c; c = c->next)
        if (c->token == token && c->waiting == waiting)
            return c;
    return NULL;
}

static int send_request(struct served *s, struct vb_call *call)
{
    static char wire[VB_WIRE_MAX]; /* the loop thread's alone */
    size_t len = vb_wire_pack_request(&call->request, wire);
    struct iovec iov = {wire, len};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(2 * sizeof(int))];
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    int fds[2], n = 0;
    for (int i = 0; i < 2; i++)
        if (call->fds[i] >= 0)
            fds[n++] = call->fds[i];
    if (n) {
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(n * sizeof(int));
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(n * sizeof(int));
        memcpy(CMSG_DATA(cmsg), fds, n * sizeof(int));
    }
    ssize_t sent;
    while ((sent = sendmsg(s->broker, &msg, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    return sent == (ssize_t)len ? 0 : -(sent < 0 ? errno : EIO);
}

/* Hands the call to the broker, or queues it while the broker has enough. */
static void to_broker(struct vb_supervisor *sup, struct vb_call *call)
{
    struct served *s = call->sandbox;
    if (s->broker < 0) {
        /* the broker is gone and its init is ending the sandbox: nothing is decided any more */
        finish(call, -EACCES, "deny", "the sandbox's broker is gone", NULL);
        return;
    }
    if (s->at_broker >= MAX_AT_BROKER) {
        struct vb_call **at = &s->backlog;
        while (*at)
            at = &(*at)->next;
        *at = call;
        return;
    }
    call->token = ++sup->next_token;
    call->request.token = call->token;
    if (send_request(s, call) != 0) {
        finish(call, -EACCES, "deny", "the sandbox's broker is gone", NULL);
        return;
    }
    s->at_broker++;
    call->waiting = VB_WAIT_BROKER;
    call->next = sup->calls;
    sup->calls = call;
}

static void send_backlog(struct vb_supervisor *sup, struct served *s)
{
    while (s->backlog && s->at_broker < MAX_AT_BROKER) {
        struct vb_call *call = s->backlog;
        s->backlog = call->next;
        call->next = NULL;
        to_broker(sup, call);
    }
}

static int granted_always(const struct served *s, const char *path, unsigned access)
{
    for (size_t i = 0; i < s->n_always; i++)
        if ((access & ~s->always[i].access) == 0 && strcmp(s->always[i].path, path) == 0)
            return 1;
    return 0;
}

static void remember_always(struct served *s, const char *path, unsigned access)
{
    for (size_t i = 0; i < s->n_always; i++)
        if (strcmp(s->always[i].path, path) == 0) {
            s->always[i].access |= access;
            return;
        }
    struct grant *more = realloc(s->always, (s->n_always + 1) * sizeof *more);
    char *copy = strdup(path);
    if (!more || !copy) {
        free(copy);
        if (more)
            s->always = more;
        return; /* out of memory: it will simply be asked again */
    }
    s->always = more;
    s->always[s->n_always++] = (struct grant){access, copy};
}

static int exe_of(uint32_t pid, struct stat *st)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%u/exe", pid);
    return stat(path, st);
}

/* Reads /proc/PID/FILE into `text`, NUL-terminated: 0, or -1 if it is gone. */
static int read_proc(uint32_t pid, const char *file, char *text, size_t cap)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%u/%s", pid, file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, text, cap - 1);
    close(fd);
    if (n <= 0)
        return -1;
    text[n] = '\0';
    return 0;
}

/* The process of thread `tid` (its Tgid) and when that process started (field
 * 22 of /proc/TGID/stat, clock ticks since boot; a thread that execs takes the
 * process's start time over, so it stays the same across an exec): 0, or -1
 * if it is gone. */
static int process_of(uint32_t tid, uint32_t *tgid, unsigned long long *started)
{
    char text[1024];
    if (read_proc(tid, "status", text, sizeof text) != 0)
        return -1;
    const char *line = strstr(text, "\nTgid:");
    if (!line || !(*tgid = (uint32_t)strtoul(line + 6, NULL, 10)))
        return -1;
    if (read_proc(*tgid, "stat", text, sizeof text) != 0)
        return -1;
    const char *after_name = strrchr(text, ')'); /* the name may hold spaces and parentheses */
    /* after the name, fields 3-21: state ppid pgrp session tty_nr tpgid flags minflt
     * cminflt majflt cmajflt utime stime cutime cstime priority nice num_threads itrealvalue */
    if (!after_name ||
        sscanf(after_name + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
               started) != 1)
        return -1;
    return 0;
}

/* Pending exec checks a sandbox may have: one per process that exec'd and has
 * not made an interposed call since. A process that ended (or never calls
 * again: a static program) leaves its check behind; past this many, checks of
 * processes that are gone are swept, and if as many live processes still
 * wait to be verified, a further exec is refused (EAGAIN) rather than run
 * unverified. */
#define MAX_EXEC_CHECKS 4096

static void sweep_exec_checks(struct served *s)
{
    for (struct exec_check **at = &s->exec_checks; *at;) {
        uint32_t tgid;
        unsigned long long started;
        if (process_of((*at)->tgid, &tgid, &started) != 0 || tgid != (*at)->tgid || started != (*at)->started) {
            forget_exec(at);
            s->n_exec_checks--;
        } else {
            at = &(*at)->next;
        }
    }
}

/* An allowed exec is about to run: note what ran before and what the checked
 * file runs. 0, or -errno when the exec must not run (it could not be verified). */
static int remember_exec(struct served *s, const struct vb_call *call, const struct stat *runs)
{
    struct stat before;
    uint32_t tgid;
    unsigned long long started;
    if (process_of(call->notif.pid, &tgid, &started) != 0 || exe_of(tgid, &before) != 0)
        return 0; /* gone already: nothing will run */
    for (struct exec_check **at = &s->exec_checks; *at;) /* the newest exec of a process is the one to verify */
        if ((*at)->tgid == tgid) {
            forget_exec(at);
            s->n_exec_checks--;
        } else {
            at = &(*at)->next;
        }
    if (s->n_exec_checks >= MAX_EXEC_CHECKS)
        sweep_exec_checks(s);
    struct exec_check *c = s->n_exec_checks < MAX_EXEC_CHECKS ? calloc(1, sizeof *c) : NULL;
    if (!c)
        return -EAGAIN;
    *c = (struct exec_check){call->notif.pid, tgid, started, before.st_dev, runs->st_dev,
                             before.st_ino, runs->st_ino, s->exec_checks};
    s->exec_checks = c;
    s->n_exec_checks++;
    return 0;
}

/* A thread with a pending exec check calls: its process runs the program the
 * checked file runs (verified: forgotten), or still the one from before (the
 * exec has not happened yet, or failed: kept), or another one: the path was
 * swapped between the check and the exec, and the process is killed before
 * this call returns. A dynamically linked program gets no further than its
 * loader's first open. For a script /proc/PID/exe is its interpreter, so a
 * script swapped for another script with the same interpreter passes; that
 * interpreter then opens the script by its path, under the read rules. */
static void verify_exec(struct served *s, const struct vb_call *call)
{
    for (struct exec_check **at = &s->exec_checks; *at; at = &(*at)->next) {
        struct exec_check *c = *at;
        if (c->tid != call->notif.pid && c->tgid != call->notif.pid)
            continue;
        uint32_t tgid;
        unsigned long long started;
        struct stat now;
        if (process_of(call->notif.pid, &tgid, &started) != 0 || tgid != c->tgid || started != c->started) {
            /* that process ended; the id now names another */
            forget_exec(at);
            s->n_exec_checks--;
            return;
        }
        if (exe_of(c->tgid, &now) != 0)
            return;
        if (now.st_dev == c->runs_dev && now.st_ino == c->runs_ino) {
            forget_exec(at);
            s->n_exec_checks--;
        } else if (!(now.st_dev == c->before_dev && now.st_ino == c->before_ino)) {
            kill((pid_t)c->tgid, SIGKILL);
            vb_audit_call(s->audit_fd, s->id, call, "kill",
                          "exec rules: the program that ran is not the one checked (its path changed)", NULL,
                          INT64_MIN);
            forget_exec(at);
            s->n_exec_checks--;
        }
        return;
    }
}

/* An ask rule holds the call: put the question to the asking side. */
static void ask(struct vb_supervisor *sup, struct vb_call *call, const struct vb_broker_reply *reply)
{
    struct question *q = calloc(1, sizeof *q);
    if (!q) {
        finish(call, -EACCES, "deny", origin_of(call->sandbox, reply->rule), reply->canonical);
        return;
    }
    q->sandbox = call->sandbox;
    q->request.token = call->token;
    q->request.sandbox_id = call->sandbox->id;
    q->request.pid = (int)call->notif.pid;
    q->request.access = reply->access;
    vb_strlcpy(q->request.syscall, call->row->name, sizeof q->request.syscall);
    vb_strlcpy(q->request.path, reply->canonical, sizeof q->request.path);
    vb_strlcpy(q->request.rule, origin_of(call->sandbox, reply->rule), sizeof q->request.rule);
    /* kept for the answer: what was asked about */
    vb_strlcpy(call->request.granted, reply->canonical, sizeof call->request.granted);
    call->asked_access = reply->access;
    call->asked_rule = reply->rule;
    call->waiting = VB_WAIT_ANSWER;
    pthread_mutex_lock(&sup->lock);
    struct question **at = &sup->questions;
    while (*at)
        at = &(*at)->next;
    *at = q;
    pthread_mutex_unlock(&sup->lock);
    call->next = sup->calls;
    sup->calls = call;
    uint64_t one = 1;
    ssize_t n = write(sup->request_fd, &one, sizeof one);
    (void)n;
}

/* The broker's reply to `call`: the call's answer, or a question first. */
static void complete(struct vb_supervisor *sup, struct vb_call *call, const struct vb_broker_reply *reply, int fd)
{
    struct served *s = call->sandbox;
    char rule[512];
    const char *decision = reply->verdict == VB_RULE_DENY ? "deny" : "allow";
    vb_strlcpy(rule, origin_of(s, reply->rule), sizeof rule);

    if (reply->verdict == VB_RULE_ASK && reply->result == -EACCES) {
        if (call->asked) {
            /* asked, allowed, and then the path reached something else: deny */
            decision = "deny";
            vb_strlcat(rule, " (asked, but the path changed meanwhile)", sizeof rule);
        } else if (granted_always(s, reply->canonical, reply->access)) {
            call->asked = 1 + VB_ANSWER_ALWAYS;
            vb_strlcpy(call->request.granted, reply->canonical, sizeof call->request.granted);
            to_broker(sup, call);
            return;
        } else if (s->ask_upcall) {
            ask(sup, call, reply);
            return;
        } else {
            decision = "deny";
            vb_strlcat(rule, " (ask: nobody to ask, denied)", sizeof rule);
        }
    } else if (reply->verdict == VB_RULE_ASK) {
        vb_strlcat(rule, call->asked == 1 + VB_ANSWER_ONCE ? " (asked: allowed once)" : " (asked: allowed always)",
                   sizeof rule);
    }

    int64_t result = reply->result;
    if (call->request.op == VB_OP_CONNECT && result == -EINPROGRESS && call->fds[1] >= 0 &&
        !(fcntl(call->fds[1], F_GETFL) & O_NONBLOCK)) {
        /* the broker connected a blocking caller's socket without waiting: wait here,
         * on that socket, as for a connect of [net].allow's */
        if (call->fds[0] >= 0)
            close(call->fds[0]);
        call->fds[0] = call->fds[1];
        call->fds[1] = -1;
        if (fd >= 0)
            close(fd);
        decide_net(sup, call, (struct vb_decision){VB_DECIDE_CONNECTING, 0, rule});
        return;
    }
    if (result >= 0) {
        switch (call->request.op) {
        case VB_OP_OPEN: {
            struct seccomp_notif_addfd addfd;
            memset(&addfd, 0, sizeof addfd);
            addfd.id = call->notif.id;
            addfd.flags = SECCOMP_ADDFD_FLAG_SEND;
            addfd.srcfd = (uint32_t)fd;
            addfd.newfd_flags = (call->request.flags & O_CLOEXEC) ? O_CLOEXEC : 0;
            /* ADDFD_SEND installs the fd and answers the call with its number, atomically */
            int newfd = ioctl(s->listener, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd);
            int err = errno;
            close(fd);
            fd = -1;
            if (newfd >= 0 || err == ENOENT) { /* ENOENT: the caller went away */
                vb_audit_call(s->audit_fd, s->id, call, decision, rule, reply->canonical, newfd);
                free_call(call);
                return;
            }
            result = -err; /* EMFILE: the caller's fd table is full */
            break;
        }
        case VB_OP_STAT: {
            struct stat st = reply->u.st;
            vb_time_stat(s->clock, &st);
            result = vb_write_memory(call, call->out_addr, &st, sizeof st);
            break;
        }
        case VB_OP_STATX: {
            struct statx stx = reply->u.stx;
            vb_time_statx(s->clock, &stx);
            result = vb_write_memory(call, call->out_addr, &stx, sizeof stx);
            break;
        }
        case VB_OP_READLINK: {
            if ((size_t)reply->result > sizeof reply->u.link || (uint64_t)reply->result > call->request.size) {
                result = -EIO; /* more than was asked for, or than a reply holds: not a broker's answer */
                break;
            }
            int w = vb_write_memory(call, call->out_addr, reply->u.link, (size_t)reply->result);
            result = w < 0 ? w : reply->result;
            break;
        }
        case VB_OP_EXEC:
            /* SAFETY: execve cannot be emulated: the kernel reads the path again
             * when it runs the program. The broker resolved the same path with
             * the command's rights and the rules allowed what it reached; a
             * thread of the caller rewriting the path between that check and
             * the exec could run another program than the one checked. That is
             * verified after the fact (remember_exec: the process is killed at
             * its next interposed call if it runs something else), and only
             * exec rules depend on it (README: per-path rules, limits); mounts
             * and Landlock (layers 0-1) still hold every other access. */
            if (remember_exec(s, call, &reply->u.st) != 0) {
                result = -EAGAIN;
                vb_strlcat(rule, " (too many execs wait to be verified)", sizeof rule);
                decision = "deny";
                break;
            }
            vb_audit_call(s->audit_fd, s->id, call, decision, rule, reply->canonical, 0);
            send_response(call, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE);
            free_call(call);
            if (fd >= 0)
                close(fd);
            return;
        default:
            break;
        }
    }
    if (fd >= 0)
        close(fd);
    finish(call, result, decision, rule, reply->canonical);
}

/* Takes one reply from the broker, if one is there: 1, else 0. */
static int broker_reply(struct vb_supervisor *sup, struct served *s)
{
    struct vb_broker_reply *reply = sup->reply;
    static char wire[VB_WIRE_MAX]; /* the loop thread's alone */
    struct iovec iov = {wire, sizeof wire};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(2 * sizeof(int))];
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    ssize_t n = recvmsg(s->broker, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n <= 0)
        return 0; /* EAGAIN: nothing yet; 0: the broker is gone (EPOLLHUP follows) */
    int fds[2] = {-1, -1}, nfds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            for (size_t k = 0; k < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int) && nfds < 2; k++)
                memcpy(&fds[nfds++], CMSG_DATA(c) + k * sizeof(int), sizeof(int));
    int malformed = (msg.msg_flags & MSG_TRUNC) || vb_wire_unpack_reply(wire, (size_t)n, reply) != 0;
    struct vb_call *call = malformed ? NULL : find_call(sup, reply->token, VB_WAIT_BROKER);
    if (nfds > 1 || !call || call->sandbox != s) {
        /* not a reply we wait for (or malformed): keep nothing of it */
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        return 1;
    }
    unlink_call(sup, call);
    s->at_broker--;
    reply->canonical[sizeof reply->canonical - 1] = '\0';
    if (call->request.op == VB_OP_OPEN && reply->result >= 0 && fds[0] < 0)
        reply->result = -EIO; /* a broker that says "opened" sends the fd */
    complete(sup, call, reply, fds[0]);
    send_backlog(sup, s);
    return 1;
}

/* Waits a little for the broker's reply before going back to epoll. The
 * broker answers in ~10 µs; sleeping instead costs a wake-up, and a wake-up
 * across CPUs is an inter-processor interrupt, dear in a VM (a pipe round
 * trip between two CPUs measured 43 µs here, 6.5 µs on one). Only with more
 * than one CPU, where the broker runs beside us; others' calls wait at most
 * this long. */
#define SPIN_NS 50000
static void await_broker_briefly(struct vb_supervisor *sup, struct served *s)
{
    if (!sup->spin || s->broker < 0 || s->at_broker == 0)
        return;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        if (broker_reply(sup, s))
            return;
        sched_yield(); /* the broker may be waiting for this CPU (as the broker's own poll does) */
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((now.tv_sec - start.tv_sec) * 1000000000L + (now.tv_nsec - start.tv_nsec) < SPIN_NS);
}

/* --- questions and answers (the asking side runs on other threads) ---------------- */

int vb_supervisor_request_fd(struct vb_supervisor *sup)
{
    return sup->request_fd;
}

int vb_supervisor_next_request(struct vb_supervisor *sup, struct vb_request *out)
{
    int rc = -EAGAIN;
    pthread_mutex_lock(&sup->lock);
    for (struct question *q = sup->questions; q; q = q->next)
        if (!q->taken) {
            q->taken = 1;
            *out = q->request;
            rc = 0;
            break;
        }
    pthread_mutex_unlock(&sup->lock);
    return rc;
}

int vb_supervisor_answer(struct vb_supervisor *sup, uint64_t token, int answer)
{
    struct answer *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->token = token;
    a->answer = answer;
    int found = 0;
    pthread_mutex_lock(&sup->lock);
    for (struct question **at = &sup->questions; *at; at = &(*at)->next)
        if ((*at)->request.token == token) {
            struct question *q = *at;
            *at = q->next;
            free(q);
            found = 1;
            break;
        }
    if (found) {
        a->next = sup->answers;
        sup->answers = a;
    }
    pthread_mutex_unlock(&sup->lock);
    if (!found) {
        free(a);
        return -ENOENT;
    }
    uint64_t one = 1;
    ssize_t n = write(sup->answer_fd, &one, sizeof one);
    (void)n;
    return 0;
}

static void take_answers(struct vb_supervisor *sup)
{
    uint64_t count;
    ssize_t n = read(sup->answer_fd, &count, sizeof count);
    (void)n;
    pthread_mutex_lock(&sup->lock);
    struct answer *answers = sup->answers;
    sup->answers = NULL;
    pthread_mutex_unlock(&sup->lock);
    while (answers) {
        struct answer *a = answers;
        answers = a->next;
        struct vb_call *call = find_call(sup, a->token, VB_WAIT_ANSWER);
        if (call) {
            unlink_call(sup, call);
            struct served *s = call->sandbox;
            if (a->answer == VB_ANSWER_ONCE || a->answer == VB_ANSWER_ALWAYS) {
                if (a->answer == VB_ANSWER_ALWAYS)
                    remember_always(s, call->request.granted, call->asked_access);
                call->asked = 1 + (unsigned)a->answer;
                to_broker(sup, call); /* again: performed if it still reaches what was allowed */
            } else {
                char rule[512];
                vb_strlcpy(rule, origin_of(s, call->asked_rule), sizeof rule);
                vb_strlcat(rule, " (asked: denied)", sizeof rule);
                char resolved[PATH_MAX];
                vb_strlcpy(resolved, call->request.granted, sizeof resolved);
                finish(call, -EACCES, "deny", rule, resolved);
            }
        }
        free(a);
    }
}

/* --- the loop ----------------------------------------------------------------------- */

/* A clock read of the time view: answered at once from the sandbox's clock.
 * It decides nothing (the filter sends only the clocks the view owns), so it
 * is not audited, and it needs none of a path call's record: a call on the
 * stack, its request left unset, serves the handler. */
static void answer_clock(struct served *s, const struct seccomp_notif *notif, const struct vb_interpose_info *row)
{
    struct vb_call call;
    call.sandbox = s;
    memcpy(&call.notif, notif, sizeof call.notif);
    call.row = row;
    if (s->exec_checks)
        verify_exec(s, &call);
    struct vb_decision d = s->clock ? row->handler(&call) : (struct vb_decision){VB_DECIDE_ERRNO, ENOSYS, NULL};
    switch (d.kind) {
    case VB_DECIDE_RETURN:
        send_response(&call, d.value, 0, 0);
        break;
    case VB_DECIDE_CONTINUE:
        /* SAFETY: a clock the view does not own (the handler says so): the filter allows it anyway */
        send_response(&call, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE);
        break;
    default:
        send_response(&call, 0, -(int)d.value, 0);
        break;
    }
}

static void receive(struct vb_supervisor *sup, struct served *s, struct seccomp_notif *notif)
{
    memset(notif, 0, sup->sizes.seccomp_notif);
    if (ioctl(s->listener, SECCOMP_IOCTL_NOTIF_RECV, notif) != 0)
        return; /* ENOENT: the caller went away before we got to it */
    const struct vb_interpose_info *row = vb_interpose_row(notif->data.nr);
    if (row && row->family == VB_FAMILY_CLOCK) {
        answer_clock(s, notif, row);
        return;
    }
    struct vb_call *call = calloc(1, sizeof *call);
    if (!call) {
        struct seccomp_notif_resp resp = {.id = notif->id, .error = -ENOMEM};
        ioctl(s->listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
        return;
    }
    call->sandbox = s;
    call->fds[0] = call->fds[1] = -1;
    memcpy(&call->notif, notif, sizeof call->notif);
    call->row = row;
    if (!call->row) {
        finish(call, -ENOSYS, "deny", "not in the syscall table", NULL); /* cannot happen: the filter is built from it */
        return;
    }
    if (s->exec_checks)
        verify_exec(s, call);
    if (call->row->family == VB_FAMILY_NET) {
        struct vb_decision d = call->row->handler(call);
        /* decided on a copy of the caller's memory: only if the call is still that one */
        if (!call_valid(call)) {
            free_call(call);
            return;
        }
        decide_net(sup, call, d);
        return;
    }
    int copied = copy_arguments(call);

    if (!s->emulate) {
        /* The paths were copied before this check: if the process died or the
         * call was interrupted meanwhile, the record describes nothing that happened. */
        if (call_valid(call))
            vb_audit_call(s->audit_fd, s->id, call, "allow", "audit: no path rules", NULL, INT64_MIN);
        /* SAFETY: audit only (see the top of this file): the supervisor decides nothing. */
        send_response(call, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE);
        free_call(call);
        return;
    }
    if (copied < 0) {
        finish(call, copied, "allow", "no rule matched", NULL);
        return;
    }
    struct vb_decision d = call->row->handler(call);
    /* everything read from the caller (and the dirfds opened from its pid) is
     * only used if the call is still the one we read it for (a handler that
     * wrote a result back checked that after its last read: not again) */
    if (!call->checked && !call_valid(call)) {
        free_call(call);
        return;
    }
    switch (d.kind) {
    case VB_DECIDE_ERRNO:
        finish(call, -d.value, "allow", "no rule matched", NULL);
        break;
    case VB_DECIDE_RETURN:
        finish(call, d.value, "allow", "no rule matched", NULL);
        break;
    case VB_DECIDE_CONTINUE:
        vb_audit_call(s->audit_fd, s->id, call, "allow", "no rule applies to this call", NULL, INT64_MIN);
        /* SAFETY: each handler returning CONTINUE says why layers 0-2 hold it */
        send_response(call, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE);
        free_call(call);
        break;
    case VB_DECIDE_BROKER:
        to_broker(sup, call);
        await_broker_briefly(sup, s);
        break;
    case VB_DECIDE_REPLACE_FD:
    case VB_DECIDE_CONNECTING:
    case VB_DECIDE_DENY:
        finish(call, -ENOSYS, "deny", "a network decision for a filesystem call", NULL); /* cannot happen */
        break;
    }
}

/* Stops serving a sandbox: every process using its filter is gone, or the
 * supervisor stops. Its calls in flight are dropped (their callers are gone,
 * or get ENOSYS from the kernel once the listener closes), its questions
 * withdrawn. The struct itself is freed after the current batch of events. */
static void drop(struct vb_supervisor *sup, struct served *s, struct served **graveyard)
{
    if (s->dead)
        return;
    s->dead = 1;
    epoll_ctl(sup->epoll_fd, EPOLL_CTL_DEL, s->listener, NULL);
    if (s->broker >= 0)
        epoll_ctl(sup->epoll_fd, EPOLL_CTL_DEL, s->broker, NULL);
    for (struct vb_call **at = &sup->calls; *at;) {
        if ((*at)->sandbox == s) {
            struct vb_call *gone = *at;
            *at = gone->next;
            free_call(gone);
        } else {
            at = &(*at)->next;
        }
    }
    while (s->backlog) {
        struct vb_call *gone = s->backlog;
        s->backlog = gone->next;
        free_call(gone);
    }
    pthread_mutex_lock(&sup->lock);
    for (struct question **at = &sup->questions; *at;) {
        if ((*at)->sandbox == s) {
            struct question *gone = *at;
            *at = gone->next;
            free(gone);
        } else {
            at = &(*at)->next;
        }
    }
    for (struct served **at = &sup->sandboxes; *at; at = &(*at)->next)
        if (*at == s) {
            *at = s->next;
            break;
        }
    pthread_mutex_unlock(&sup->lock);
    for (size_t i = 0; i < CALLER_PIDFDS; i++) /* its processes are gone: keep nothing of them */
        if (sup->pidfds[i].fd >= 0 && sup->pidfds[i].sandbox == s) {
            close(sup->pidfds[i].fd);
            sup->pidfds[i].fd = -1;
        }
    close_served_fds(s);
    s->next = *graveyard;
    *graveyard = s;
    atomic_fetch_sub(&sup->served, 1);
}

/* The broker's end closed: it died (killed inside, or the sandbox is
 * ending). Its init ends the sandbox; until then nothing more is decided. */
static void broker_gone(struct vb_supervisor *sup, struct served *s)
{
    epoll_ctl(sup->epoll_fd, EPOLL_CTL_DEL, s->broker, NULL);
    close(s->broker);
    s->broker = -1;
    for (struct vb_call **at = &sup->calls; *at;) {
        struct vb_call *call = *at;
        if (call->sandbox == s && call->waiting == VB_WAIT_BROKER) {
            *at = call->next;
            finish(call, -EACCES, "deny", "the sandbox's broker is gone", NULL);
        } else {
            at = &call->next;
        }
    }
    s->at_broker = 0;
    send_backlog(sup, s); /* each fails the same way */
}

int vb_supervisor_run(struct vb_supervisor *sup)
{
    struct seccomp_notif *notif = calloc(1, sup->sizes.seccomp_notif);
    if (!notif)
        return -ENOMEM;
    int rc = 0, stop = 0;
    struct timespec last_event;
    clock_gettime(CLOCK_MONOTONIC, &last_event);
    while (!stop) {
        struct epoll_event events[32];
        /* Calls come in bursts: for SPIN_NS after the last event, poll
         * instead of sleeping, so the next call of the burst is taken at once
         * rather than after a wake-up (see await_broker_briefly). */
        int n = epoll_wait(sup->epoll_fd, events, 32, 0);
        if (n == 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long idle = (now.tv_sec - last_event.tv_sec) * 1000000000L + (now.tv_nsec - last_event.tv_nsec);
            if (sup->spin && idle < SPIN_NS) {
                sched_yield(); /* a caller woken on this CPU runs at once */
                continue;
            }
            n = epoll_wait(sup->epoll_fd, events, 32, -1);
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &last_event);
        struct served *graveyard = NULL;
        for (int i = 0; i < n; i++) {
            if (events[i].data.u64 & 1) { /* a held connect's socket (watches are aligned) */
                connect_done(sup, events[i].data.u64 >> 1);
                continue;
            }
            struct watch *w = events[i].data.ptr;
            struct served *s = w->sandbox;
            if (s && s->dead)
                continue;
            switch (w->kind) {
            case WATCH_STOP:
                stop = 1;
                break;
            case WATCH_ANSWERS:
                take_answers(sup);
                break;
            case WATCH_LISTENER:
                if (events[i].events & EPOLLIN)
                    receive(sup, s, notif);
                else if (events[i].events & (EPOLLHUP | EPOLLERR))
                    drop(sup, s, &graveyard); /* every process using this filter is gone */
                break;
            case WATCH_BROKER:
                if (events[i].events & EPOLLIN)
                    while (broker_reply(sup, s) && !s->dead)
                        ;
                if ((events[i].events & (EPOLLHUP | EPOLLERR)) && !s->dead && s->broker >= 0)
                    broker_gone(sup, s); /* after its last replies were taken */
                break;
            }
        }
        while (graveyard) {
            struct served *s = graveyard;
            graveyard = s->next;
            free_served(s);
        }
    }
    /* Stopping: let every sandbox go. Their interposed calls fail (ENOSYS)
     * from now on and their brokers see EOF and exit, which ends them. */
    struct served *graveyard = NULL;
    for (;;) {
        pthread_mutex_lock(&sup->lock);
        struct served *s = sup->sandboxes;
        pthread_mutex_unlock(&sup->lock);
        if (!s)
            break;
        drop(sup, s, &graveyard);
    }
    while (graveyard) {
        struct served *s = graveyard;
        graveyard = s->next;
        free_served(s);
    }
    free(notif);
    return rc;
}
