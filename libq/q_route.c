/*
 * q_route.c - a recipient domain to an ordered list of (host, IP, port).
 *
 * Owns: route-line expansion, address-literal domains, DNS MX lookup
 * (res_nquery + ns_initparse on the system resolver: nothing else is ever
 * queried), implicit MX (RFC 5321 5.1), null MX (RFC 7505), the random
 * order of equal MX preferences, name -> addresses (hosts_file, then
 * getaddrinfo), and the hosts_file cache. See q/route.h for the order of
 * resolution and the return values.
 *
 * Invariants:
 *  - a successful result has 1..MAX_HOSTS entries, each (ip, port) once,
 *    every ip numeric (inet_ntop form); any other result is empty.
 *  - permanent (bounce) only when the DNS said so (NXDOMAIN, no records,
 *    null MX) or a name is under .invalid; every other lookup failure
 *    (SERVFAIL, timeout, REFUSED, malformed answer, EAI_AGAIN/EAI_FAIL)
 *    is temporary: bouncing mail over a broken name server is worse than
 *    a delay.
 *  - a domain or name listed in hosts_file never causes a DNS query.
 *    A domain listed there is routed to its addresses as an implicit MX
 *    (the file exists so tests need no DNS).
 *  - names under ".invalid" are not looked up (RFC 6761 6.4).
 *  - names that came from the DNS (MX targets, implicit MX) reach
 *    getaddrinfo (or the test seam) with a trailing dot, and its
 *    loopback/unspecified answers for them are dropped; route-line
 *    names, hosts_file and literals are never filtered (the tests route
 *    everything to 127.0.0.1 that way).
 *
 * hosts_file cache: up to HF_SLOTS files, each parsed once into entries
 * sorted by (name, line order) and looked up by binary search, under one
 * mutex; a lookup stat()s the file (one syscall) and parses it again
 * when its inode, size or modification time changed. Lines: an address
 * then names, '#' starts a comment, blanks and CR separate; lines whose
 * address does not parse (or carries a %zone) are ignored, as the C
 * library does. Names compare case-insensitively, a trailing dot ignored.
 *
 * Bounds: MX records used per domain <= MAX_MX, addresses per name <=
 * MAX_ADDRS, entries in a result <= MAX_HOSTS (the rest is dropped),
 * DNS answers <= 64 KiB, hosts_file <= 64 MiB. Duplicate removal is
 * O(n^2) in the (bounded) number of entries.
 */
#include "config.h"
#include "q/route.h"
#include "q/conf.h"
#include "q/addr.h"
#include "q_private.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MAX_HOSTS 256
#define MAX_MX 64
#define MAX_ADDRS 32
#define DNS_MAX 65536
#define HF_MAX_SIZE (64L * 1024 * 1024)
#define HF_SLOTS 4
#define WHY_MAX 300

/* outcome of one name lookup (RS_LOCAL: a name from DNS whose every
 * address is loopback or unspecified; permanent) */
enum rs { RS_OK, RS_PERM, RS_TEMP, RS_ERR, RS_LOCAL };

/* ------------------------------------------------------------------ */
/* small helpers */

static void lower(char *s)
{
	for (; *s != '\0'; s++)
		*s = (char)tolower((unsigned char)*s);
}

/* A copy of a name, lower-cased, one trailing dot removed; NULL on
 * ENOMEM. */
static char *norm_name(const char *s)
{
	size_t n = strlen(s);
	char *c;

	if (n > 1 && s[n - 1] == '.')
		n--;
	c = strndup(s, n);
	if (c != NULL)
		lower(c);
	return c;
}

/* Is s a numeric IPv4/IPv6 address? Its canonical text goes to out. */
static bool ip_literal(const char *s, char *out, size_t size)
{
	unsigned char a[sizeof(struct in6_addr)];

	if (inet_pton(AF_INET, s, a) == 1)
		return inet_ntop(AF_INET, a, out, (socklen_t)size) != NULL;
	if (inet_pton(AF_INET6, s, a) == 1)
		return inet_ntop(AF_INET6, a, out, (socklen_t)size) != NULL;
	return false;
}

static bool under_invalid(const char *name)
{
	size_t n = strlen(name);

	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n == 7 && strncasecmp(name, "invalid", 7) == 0)
		return true;
	return n > 8 && strncasecmp(name + n - 8, ".invalid", 8) == 0;
}

/* Append ip to a strv unless present. 0, or -1 on ENOMEM. */
static int strv_add_unique(char ***v, size_t *n, const char *ip)
{
	char **nv, *c;
	size_t i;

	for (i = 0; i < *n; i++)
		if (strcmp((*v)[i], ip) == 0)
			return 0;
	c = strdup(ip);
	if (c == NULL)
		return -1;
	nv = realloc(*v, (*n + 1) * sizeof(*nv));
	if (nv == NULL) {
		free(c);
		return -1;
	}
	nv[(*n)++] = c;
	*v = nv;
	return 0;
}

/* ------------------------------------------------------------------ */
/* random order of equal preferences: xorshift64*, one state per thread */

static _Thread_local uint64_t rng_state;

void q_route_seed(unsigned long seed)
{
	rng_state = (uint64_t)seed * 0x9E3779B97F4A7C15ULL + 1;
}

static uint64_t rng_next(void)
{
	uint64_t x;

	if (rng_state == 0) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		q_route_seed((unsigned long)ts.tv_nsec ^
			     ((unsigned long)ts.tv_sec << 20) ^
			     ((unsigned long)getpid() << 8) ^
			     (unsigned long)(uintptr_t)&ts);
	}
	x = rng_state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return x * 0x2545F4914F6CDD1DULL;
}

/* ------------------------------------------------------------------ */
/* hosts_file */

struct hf_ent {
	char *name;
	char *ip;
	size_t order;
};

struct hf {
	char *path;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtim;
	struct hf_ent *e;
	size_t n;
};

static pthread_mutex_t hf_mu = PTHREAD_MUTEX_INITIALIZER;
static struct hf *hf_cache[HF_SLOTS];
static unsigned hf_victim;

static void hf_free(struct hf *f)
{
	size_t i;

	if (f == NULL)
		return;
	for (i = 0; i < f->n; i++) {
		free(f->e[i].name);
		free(f->e[i].ip);
	}
	free(f->e);
	free(f->path);
	free(f);
}

void q_route_cache_flush(void)
{
	size_t i;

	pthread_mutex_lock(&hf_mu);
	for (i = 0; i < HF_SLOTS; i++) {
		hf_free(hf_cache[i]);
		hf_cache[i] = NULL;
	}
	pthread_mutex_unlock(&hf_mu);
}

static int hf_cmp(const void *a, const void *b)
{
	const struct hf_ent *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	if (c != 0)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

static int hf_add(struct hf *f, size_t *cap, const char *name, size_t nlen,
		  const char *ip)
{
	struct hf_ent *e;

	if (nlen > 1 && name[nlen - 1] == '.')
		nlen--;
	if (nlen == 0 || nlen > 255)
		return 0;
	if (f->n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 64;

		e = realloc(f->e, ncap * sizeof(*e));
		if (e == NULL)
			return -1;
		f->e = e;
		*cap = ncap;
	}
	e = &f->e[f->n];
	e->name = strndup(name, nlen);
	e->ip = strdup(ip);
	if (e->name == NULL || e->ip == NULL) {
		free(e->name);
		free(e->ip);
		return -1;
	}
	lower(e->name);
	e->order = f->n;
	f->n++;
	return 0;
}

/* Parse the text of a hosts file into f. 0 or -1 (ENOMEM). */
static int hf_parse(struct hf *f, const char *text, size_t len)
{
	const char *p = text, *end = text + len;
	size_t cap = 0;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *le = eol != NULL ? eol : end;
		const char *hash = memchr(p, '#', (size_t)(le - p));
		const char *q, *stop = hash != NULL ? hash : le;
		char ipbuf[INET6_ADDRSTRLEN + 16], canon[INET6_ADDRSTRLEN];
		bool first = true, ok = false;

		for (q = p; q < stop;) {
			const char *t;
			size_t tl;

			while (q < stop && (*q == ' ' || *q == '\t' || *q == '\r'))
				q++;
			if (q == stop)
				break;
			t = q;
			while (q < stop && *q != ' ' && *q != '\t' && *q != '\r')
				q++;
			tl = (size_t)(q - t);
			if (first) {
				first = false;
				if (tl >= sizeof(ipbuf))
					break;
				memcpy(ipbuf, t, tl);
				ipbuf[tl] = '\0';
				ok = ip_literal(ipbuf, canon, sizeof(canon));
				if (!ok)
					break;
				continue;
			}
			if (hf_add(f, &cap, t, tl, canon) < 0)
				return -1;
		}
		p = eol != NULL ? eol + 1 : end;
	}
	if (f->n > 1)
		qsort(f->e, f->n, sizeof(*f->e), hf_cmp);
	return 0;
}

static int read_all(const char *path, char **buf_r, size_t *len_r,
		    struct stat *st, const char **error_r)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char *buf;
	size_t len = 0;

	if (fd < 0)
		return q_err(error_r, "hosts_file %s: %s", path, strerror(errno));
	if (fstat(fd, st) != 0 || st->st_size > HF_MAX_SIZE) {
		int e = errno;

		close(fd);
		return q_err(error_r, "hosts_file %s: %s", path,
			     st->st_size > HF_MAX_SIZE ? "larger than 64 MiB"
						       : strerror(e));
	}
	buf = malloc((size_t)st->st_size + 1);
	if (buf == NULL) {
		close(fd);
		return q_err(error_r, "hosts_file %s: out of memory", path);
	}
	while (len < (size_t)st->st_size) {
		ssize_t r = read(fd, buf + len, (size_t)st->st_size - len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;

			free(buf);
			close(fd);
			return q_err(error_r, "hosts_file %s: %s", path,
				     strerror(e));
		}
		if (r == 0)
			break;     /* shrank meanwhile: take what is there */
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	*buf_r = buf;
	*len_r = len;
	return 0;
}

static bool same_file(const struct hf *f, const struct stat *st)
{
	return f->dev == st->st_dev && f->ino == st->st_ino &&
	       f->size == st->st_size &&
	       f->mtim.tv_sec == st->st_mtim.tv_sec &&
	       f->mtim.tv_nsec == st->st_mtim.tv_nsec;
}

/* The cached, current parse of path. Called with hf_mu held. */
static struct hf *hf_get(const char *path, const char **error_r)
{
	struct stat st;
	struct hf *f = NULL;
	size_t i, slot = HF_SLOTS;
	char *text = NULL;
	size_t len = 0;

	if (stat(path, &st) != 0) {
		q_err(error_r, "hosts_file %s: %s", path, strerror(errno));
		return NULL;
	}
	for (i = 0; i < HF_SLOTS; i++) {
		if (hf_cache[i] != NULL && strcmp(hf_cache[i]->path, path) == 0) {
			if (same_file(hf_cache[i], &st))
				return hf_cache[i];
			slot = i;
			break;
		}
	}
	if (read_all(path, &text, &len, &st, error_r) < 0)
		return NULL;
	f = calloc(1, sizeof(*f));
	if (f == NULL || (f->path = strdup(path)) == NULL ||
	    hf_parse(f, text, len) < 0) {
		free(text);
		hf_free(f);
		q_err(error_r, "hosts_file %s: out of memory", path);
		return NULL;
	}
	free(text);
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	f->size = st.st_size;
	f->mtim = st.st_mtim;
	if (slot == HF_SLOTS) {
		for (i = 0; i < HF_SLOTS && hf_cache[i] != NULL; i++)
			;
		if (i < HF_SLOTS) {
			slot = i;
		} else {
			slot = hf_victim;
			hf_victim = (hf_victim + 1) % HF_SLOTS;
		}
	}
	hf_free(hf_cache[slot]);
	hf_cache[slot] = f;
	return f;
}

int q_hosts_file_lookup(const char *path, const char *name, char ***ips_r,
			size_t *n_r, const char **error_r)
{
	struct hf *f;
	char *key;
	size_t lo, hi;
	int ret = 0;

	*ips_r = NULL;
	*n_r = 0;
	key = norm_name(name);
	if (key == NULL)
		return q_err(error_r, "out of memory");
	pthread_mutex_lock(&hf_mu);
	f = hf_get(path, error_r);
	if (f == NULL) {
		ret = -1;
		goto out;
	}
	lo = 0;
	hi = f->n;
	while (lo < hi) {              /* first entry >= key */
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(f->e[mid].name, key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < f->n && strcmp(f->e[lo].name, key) == 0; lo++) {
		if (*n_r < MAX_ADDRS &&
		    strv_add_unique(ips_r, n_r, f->e[lo].ip) < 0) {
			ret = q_err(error_r, "out of memory");
			goto out;
		}
	}
	if (*n_r == 0)
		ret = Q_NOTFOUND;
out:
	pthread_mutex_unlock(&hf_mu);
	if (ret != 0) {
		q_strv_free(ips_r, *n_r);
		*n_r = 0;
	}
	free(key);
	return ret;
}

/* ------------------------------------------------------------------ */
/* system lookups (replaceable by tests) */

static int sys_query(const char *name, int type, unsigned char *answer,
		     int anslen, int *herr_r)
{
	struct __res_state rs;
	int n;

	memset(&rs, 0, sizeof(rs));
	if (res_ninit(&rs) != 0) {
		*herr_r = TRY_AGAIN;
		return -1;
	}
	n = res_nquery(&rs, name, ns_c_in, type, answer, anslen);
	if (n < 0)
		*herr_r = rs.res_h_errno;
	res_nclose(&rs);
	return n;
}

static q_route_query_fn *query_fn = sys_query;
static q_route_addr_fn *addr_fn;

void q_route_set_query(q_route_query_fn *fn)
{
	query_fn = fn != NULL ? fn : sys_query;
}

void q_route_set_addr(q_route_addr_fn *fn)
{
	addr_fn = fn;
}

/* getaddrinfo: every address (A and AAAA), in the order returned. */
static int sys_addr(const char *name, char ***ips_r, size_t *n_r)
{
	struct addrinfo hints, *res = NULL, *ai;
	int e;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	e = getaddrinfo(name, NULL, &hints, &res);
	if (e != 0)
		return e;
	for (ai = res; ai != NULL && *n_r < MAX_ADDRS; ai = ai->ai_next) {
		char buf[INET6_ADDRSTRLEN];
		const void *a;

		if (ai->ai_family == AF_INET)
			a = &((struct sockaddr_in *)(void *)ai->ai_addr)->sin_addr;
		else if (ai->ai_family == AF_INET6)
			a = &((struct sockaddr_in6 *)(void *)ai->ai_addr)->sin6_addr;
		else
			continue;
		if (inet_ntop(ai->ai_family, a, buf, sizeof(buf)) == NULL)
			continue;
		if (strv_add_unique(ips_r, n_r, buf) < 0) {
			freeaddrinfo(res);
			return EAI_MEMORY;
		}
	}
	freeaddrinfo(res);
	return *n_r > 0 ? 0 : EAI_NONAME;
}

/* ------------------------------------------------------------------ */
/* name -> addresses */

/* Is ip (numeric) this machine whatever it is: 127.0.0.0/8, 0.0.0.0/8,
 * ::1, ::, or those two IPv4 ranges mapped into IPv6? */
static bool local_ip(const char *ip)
{
	unsigned char a[sizeof(struct in6_addr)];
	static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0,
						  0, 0xff, 0xff };
	size_t i;

	if (inet_pton(AF_INET, ip, a) == 1)
		return a[0] == 127 || a[0] == 0;
	if (inet_pton(AF_INET6, ip, a) != 1)
		return false;
	if (memcmp(a, mapped, sizeof(mapped)) == 0)
		return a[12] == 127 || a[12] == 0;
	for (i = 0; i < 15; i++)
		if (a[i] != 0)
			return false;
	return a[15] <= 1;
}

/* Drop the local_ip addresses of (*ips_r, *n_r); how many went. */
static size_t drop_local(char **ips, size_t *n_r)
{
	size_t i, k = 0, n = *n_r;

	for (i = 0; i < n; i++) {
		if (local_ip(ips[i]))
			free(ips[i]);
		else
			ips[k++] = ips[i];
	}
	*n_r = k;
	return n - k;
}

/* Resolve one host name (or IP literal). On RS_OK, *ips_r/n_r hold the
 * addresses; else why holds the reason (and for RS_ERR the error buffer
 * too). from_dns: the name came from the DNS (an MX target, or the
 * domain itself as implicit MX): getaddrinfo gets it as an absolute name
 * (a trailing dot: no resolver search list, RFC 5321 5.1), and the
 * loopback and unspecified addresses it returns are dropped (a parked
 * domain's "MX 0 localhost." or "A 127.0.0.1"), RS_LOCAL when none is
 * left. hosts_file and literals are taken as they are. */
static enum rs resolve_name(const struct q_conf *conf, const char *name,
			    bool from_dns, char ***ips_r, size_t *n_r,
			    char *why)
{
	char canon[INET6_ADDRSTRLEN], lit[INET6_ADDRSTRLEN + 2];
	char absname[NS_MAXDNAME + 2];
	const char *err, *qname = name;
	size_t nl = strlen(name);
	int e, saved;

	*ips_r = NULL;
	*n_r = 0;
	if (nl >= 2 && name[0] == '[' && name[nl - 1] == ']' &&
	    nl - 2 < sizeof(lit)) {
		memcpy(lit, name + 1, nl - 2);
		lit[nl - 2] = '\0';
		name = lit;
	}
	if (ip_literal(name, canon, sizeof(canon))) {
		if (strv_add_unique(ips_r, n_r, canon) < 0)
			goto nomem;
		return RS_OK;
	}
	if (conf->hosts_file != NULL && conf->hosts_file[0] != '\0') {
		int r = q_hosts_file_lookup(conf->hosts_file, name, ips_r, n_r,
					    &err);

		if (r == 0)
			return RS_OK;
		if (r < 0) {
			snprintf(why, WHY_MAX, "%s", err);
			return RS_ERR;
		}
	}
	if (under_invalid(name)) {
		snprintf(why, WHY_MAX, "%s: host not found (.invalid, RFC 6761)",
			 name);
		return RS_PERM;
	}
	if (from_dns && nl > 0 && name[nl - 1] != '.' &&
	    nl + 2 <= sizeof(absname)) {
		memcpy(absname, name, nl);
		absname[nl] = '.';
		absname[nl + 1] = '\0';
		qname = absname;
	}
	e = addr_fn != NULL ? addr_fn(qname, ips_r, n_r) :
		sys_addr(qname, ips_r, n_r);
	saved = errno;
	if (e == 0 && *n_r > 0 && from_dns && drop_local(*ips_r, n_r) > 0 &&
	    *n_r == 0) {
		q_strv_free(ips_r, *n_r);
		snprintf(why, WHY_MAX, "MX host %s resolves only to "
			 "loopback/unspecified addresses", name);
		return RS_LOCAL;
	}
	if (e == 0 && *n_r > 0)
		return RS_OK;
	q_strv_free(ips_r, *n_r);
	*n_r = 0;
	switch (e) {
	case 0:
	case EAI_NONAME:
#ifdef EAI_NODATA
	case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
	case EAI_ADDRFAMILY:
#endif
		snprintf(why, WHY_MAX, "%s: host not found", name);
		return RS_PERM;
	case EAI_MEMORY:
		goto nomem;
	default:
		snprintf(why, WHY_MAX, "%s: address lookup failed temporarily: %s",
			 name, e == EAI_SYSTEM ? strerror(saved) : gai_strerror(e));
		return RS_TEMP;
	}
nomem:
	q_strv_free(ips_r, *n_r);
	*n_r = 0;
	snprintf(why, WHY_MAX, "out of memory");
	return RS_ERR;
}

/* ------------------------------------------------------------------ */
/* building a result */

struct build {
	struct q_hostlist_r *out;
	size_t cap;
	bool temp, perm, err;        /* what failures were seen */
	bool local;                  /* a perm one was RS_LOCAL */
	char temp_why[WHY_MAX], perm_why[WHY_MAX], err_why[WHY_MAX];
};

static void note(struct build *b, enum rs r, const char *why)
{
	bool *flag = r == RS_TEMP ? &b->temp : r == RS_PERM ? &b->perm : &b->err;
	char *dst = r == RS_TEMP ? b->temp_why : r == RS_PERM ? b->perm_why
							      : b->err_why;

	if (!*flag)
		snprintf(dst, WHY_MAX, "%s", why);
	*flag = true;
}

/* Add one entry unless (ip, port) is already there. -1 on ENOMEM. */
static int add_host(struct build *b, const char *name, const char *ip,
		    unsigned port, int pref, bool from_mx)
{
	struct q_hostlist_r *l = b->out;
	struct q_host *h;
	size_t i;

	for (i = 0; i < l->n; i++)
		if (l->h[i].port == port && strcmp(l->h[i].ip, ip) == 0)
			return 0;
	if (l->n == MAX_HOSTS)
		return 0;
	if (l->n == b->cap) {
		size_t ncap = b->cap ? b->cap * 2 : 8;

		h = realloc(l->h, ncap * sizeof(*h));
		if (h == NULL)
			return -1;
		l->h = h;
		b->cap = ncap;
	}
	h = &l->h[l->n];
	memset(h, 0, sizeof(*h));
	h->name = norm_name(name);
	h->ip = strdup(ip);
	if (h->name == NULL || h->ip == NULL) {
		free(h->name);
		free(h->ip);
		return -1;
	}
	h->port = port;
	h->mx_pref = pref;
	h->from_mx = from_mx;
	if (from_mx)
		l->by_mx = true;
	l->n++;
	return 0;
}

/* Resolve name and add its addresses (from_dns: see resolve_name).
 * -1 only on ENOMEM. */
static int add_name(struct build *b, const struct q_conf *conf,
		    const char *name, unsigned port, int pref, bool from_mx,
		    bool from_dns)
{
	char why[WHY_MAX], **ips;
	size_t n, i;
	enum rs r;
	int ret = 0;

	r = resolve_name(conf, name, from_dns, &ips, &n, why);
	if (r == RS_LOCAL) {
		if (!b->perm)
			b->local = true;
		note(b, RS_PERM, why);
		return 0;
	}
	if (r != RS_OK) {
		note(b, r, why);
		return 0;
	}
	for (i = 0; i < n && ret == 0; i++)
		ret = add_host(b, name, ips[i], port, pref, from_mx);
	q_strv_free(&ips, n);
	if (ret < 0)
		note(b, RS_ERR, "out of memory");
	return ret;
}

/* ------------------------------------------------------------------ */
/* MX */

struct mx {
	int pref;
	char name[NS_MAXDNAME];
};

static const char *herr_text(int herr)
{
	switch (herr) {
	case HOST_NOT_FOUND: return "NXDOMAIN";
	case NO_DATA:        return "no records";
	case TRY_AGAIN:      return "SERVFAIL or timeout";
	case NO_RECOVERY:    return "refused or malformed (NO_RECOVERY)";
	default:             return "resolver error";
	}
}

/* Query MX records of domain. RS_OK with *n_r records (0: none, use the
 * implicit MX), RS_PERM (NXDOMAIN), RS_TEMP, RS_ERR. *null_r: the
 * records were only null MX ("."). */
static enum rs mx_query(const char *domain, struct mx **mx_r, size_t *n_r,
			bool *null_r, char *why)
{
	unsigned char *ans = NULL;
	int alen = 4096, n = -1, herr = 0, i, count;
	size_t nmx = 0, nnull = 0;
	struct mx *mx = NULL;
	ns_msg msg;

	*mx_r = NULL;
	*n_r = 0;
	*null_r = false;
	for (i = 0; i < 3; i++) {          /* grow once if the answer is big */
		unsigned char *na = realloc(ans, (size_t)alen);

		if (na == NULL)
			goto nomem;
		ans = na;
		herr = 0;
		n = query_fn(domain, ns_t_mx, ans, alen, &herr);
		if (n < 0 || n <= alen)
			break;
		if (n > DNS_MAX) {
			n = -1;
			herr = NO_RECOVERY;
			break;
		}
		alen = n;
	}
	if (n < 0) {
		free(ans);
		if (herr == NO_DATA)
			return RS_OK;                 /* no MX: implicit MX */
		snprintf(why, WHY_MAX, "%s: MX lookup: %s", domain, herr_text(herr));
		return herr == HOST_NOT_FOUND ? RS_PERM : RS_TEMP;
	}
	if (n > alen || ns_initparse(ans, n, &msg) < 0) {
		free(ans);
		snprintf(why, WHY_MAX, "%s: MX lookup: malformed DNS answer", domain);
		return RS_TEMP;
	}
	count = ns_msg_count(msg, ns_s_an);
	mx = calloc(MAX_MX, sizeof(*mx));
	if (mx == NULL)
		goto nomem;
	for (i = 0; i < count && nmx < MAX_MX; i++) {
		ns_rr rr;
		const unsigned char *rd;
		size_t k;
		int pref;

		if (ns_parserr(&msg, ns_s_an, i, &rr) < 0) {
			free(ans);
			free(mx);
			snprintf(why, WHY_MAX, "%s: MX lookup: malformed DNS "
				 "answer record", domain);
			return RS_TEMP;
		}
		if (ns_rr_type(rr) != ns_t_mx || ns_rr_class(rr) != ns_c_in)
			continue;                     /* CNAME and the like */
		if (ns_rr_rdlen(rr) < 3)
			continue;
		rd = ns_rr_rdata(rr);
		pref = (int)ns_get16(rd);
		if (ns_name_uncompress(ns_msg_base(msg), ns_msg_end(msg), rd + 2,
				       mx[nmx].name, sizeof(mx[nmx].name)) < 0)
			continue;
		if (mx[nmx].name[0] == '\0' || strcmp(mx[nmx].name, ".") == 0) {
			nnull++;                      /* null MX (RFC 7505) */
			continue;
		}
		lower(mx[nmx].name);
		for (k = 0; k < nmx; k++) {           /* a name once: best pref */
			if (strcmp(mx[k].name, mx[nmx].name) == 0) {
				if (pref < mx[k].pref)
					mx[k].pref = pref;
				break;
			}
		}
		if (k < nmx)
			continue;
		mx[nmx].pref = pref;
		nmx++;
	}
	free(ans);
	if (nmx == 0 && nnull > 0)
		*null_r = true;
	if (nmx == 0) {
		free(mx);
		mx = NULL;
	}
	*mx_r = mx;
	*n_r = nmx;
	return RS_OK;
nomem:
	free(ans);
	free(mx);
	snprintf(why, WHY_MAX, "out of memory");
	return RS_ERR;
}

/* Shuffle, then a stable sort by preference: equal preferences end up in
 * random order (RFC 5321 5.1). */
static void mx_order(struct mx *mx, size_t n)
{
	size_t i, j;
	struct mx t;

	for (i = n; i > 1; i--) {
		j = (size_t)(rng_next() % i);
		if (j != i - 1) {
			t = mx[i - 1];
			mx[i - 1] = mx[j];
			mx[j] = t;
		}
	}
	for (i = 1; i < n; i++) {
		t = mx[i];
		for (j = i; j > 0 && mx[j - 1].pref > t.pref; j--)
			mx[j] = mx[j - 1];
		mx[j] = t;
	}
}

/* The domain's MX hosts (or implicit MX) added to b. -1 on ENOMEM. */
static int add_mx(struct build *b, const struct q_conf *conf,
		  const char *domain, unsigned port)
{
	char why[WHY_MAX], canon[INET6_ADDRSTRLEN];
	struct mx *mx;
	size_t n, i, before = b->out->n;
	bool null_mx, skipped_ip = false;
	enum rs r;

	if (under_invalid(domain)) {
		snprintf(why, WHY_MAX, "%s: domain does not exist (.invalid, "
			 "RFC 6761)", domain);
		note(b, RS_PERM, why);
		return 0;
	}
	r = mx_query(domain, &mx, &n, &null_mx, why);
	if (r != RS_OK) {
		note(b, r, why);
		return r == RS_ERR ? -1 : 0;
	}
	if (null_mx) {
		snprintf(why, WHY_MAX, "%s: the domain accepts no mail (null MX, "
			 "RFC 7505)", domain);
		note(b, RS_PERM, why);
		return 0;
	}
	if (n == 0) {
		/* implicit MX: the domain's own addresses (hosts "_A") */
		bool had_perm = b->perm;
		int ret = add_name(b, conf, domain, port, -1, false, true);

		if (ret == 0 && b->out->n == before && b->perm && !had_perm &&
		    !b->local)
			snprintf(b->perm_why, WHY_MAX, "%s: domain has no MX or "
				 "address records", domain);
		return ret;
	}
	mx_order(mx, n);
	for (i = 0; i < n; i++) {
		if (ip_literal(mx[i].name, canon, sizeof(canon))) {
			skipped_ip = true;            /* as Exim: not allowed */
			continue;
		}
		if (add_name(b, conf, mx[i].name, port, mx[i].pref, true,
			     true) < 0) {
			free(mx);
			return -1;
		}
	}
	free(mx);
	if (b->out->n == before && skipped_ip) {
		snprintf(why, WHY_MAX, "%s: MX records point to IP addresses, "
			 "not host names", domain);
		note(b, RS_PERM, why);
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* entry points */

static int finish(struct build *b, const char *what, const char **error_r)
{
	struct q_hostlist_r *l = b->out;

	if (b->err) {
		q_route_free(l);
		return q_err(error_r, "%s: %s", what, b->err_why);
	}
	if (l->n > 0) {
		l->partial = b->temp;
		return 0;
	}
	q_route_free(l);
	if (b->temp) {
		q_err(error_r, "%s", b->temp_why);
		return Q_ROUTE_TEMPORARY;
	}
	if (b->perm)
		q_err(error_r, "%s", b->perm_why);
	else
		q_err(error_r, "%s: no hosts", what);
	return Q_ROUTE_PERMANENT;
}

static int add_specs(struct build *b, const struct q_conf *conf,
		     const struct q_hostspec *hs, size_t n, const char *domain)
{
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned port = hs[i].port != 0 ? hs[i].port : conf->port;
		bool mx = hs[i].mx || (hs[i].name != NULL &&
				       strcasecmp(hs[i].name, "mx") == 0);

		if (mx) {
			if (domain == NULL) {
				note(b, RS_PERM, "\"mx\" in a host list without "
				     "a domain");
				continue;
			}
			if (add_mx(b, conf, domain, port) < 0)
				return -1;
		} else if (hs[i].name != NULL &&
			   add_name(b, conf, hs[i].name, port, -1, false,
				    false) < 0) {
			return -1;
		}
	}
	return 0;
}

int q_route_hosts(const struct q_conf *conf, const struct q_hostspec *hosts,
		  size_t n, const char *domain, struct q_hostlist_r *out,
		  const char **error_r)
{
	struct build b;
	char *d = NULL;
	int ret;

	memset(out, 0, sizeof(*out));
	memset(&b, 0, sizeof(b));
	b.out = out;
	if (domain != NULL && (d = norm_name(domain)) == NULL)
		return q_err(error_r, "out of memory");
	if (add_specs(&b, conf, hosts, n, d) < 0 && !b.err)
		note(&b, RS_ERR, "out of memory");
	ret = finish(&b, d != NULL ? d : "host list", error_r);
	free(d);
	return ret;
}

/* "[192.0.2.1]" or "[IPv6:2001:db8::1]": the address, or NULL. */
static const char *addr_literal(const char *d, char *buf, size_t size)
{
	size_t n = strlen(d);
	char canon[INET6_ADDRSTRLEN];

	if (n < 3 || d[0] != '[' || d[n - 1] != ']' || n - 2 >= size)
		return NULL;
	memcpy(buf, d + 1, n - 2);
	buf[n - 2] = '\0';
	if (strncasecmp(buf, "IPv6:", 5) == 0) {
		unsigned char a[sizeof(struct in6_addr)];

		if (inet_pton(AF_INET6, buf + 5, a) != 1)
			return NULL;
		return inet_ntop(AF_INET6, a, buf, (socklen_t)size);
	}
	if (!ip_literal(buf, canon, sizeof(canon)) || strchr(canon, ':') != NULL)
		return NULL;
	snprintf(buf, size, "%s", canon);
	return buf;
}

static bool domain_ok(const char *d)
{
	size_t n = strlen(d);
	const char *p;

	if (n == 0 || n > 253)
		return false;
	for (p = d; *p != '\0'; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' &&
		    *p != '_')
			return false;
	return d[0] != '.' && strstr(d, "..") == NULL;
}

int q_route_domain(const struct q_conf *conf, const char *domain,
		   struct q_hostlist_r *out, const char **error_r)
{
	const struct q_route *r;
	struct build b;
	char *d, buf[INET6_ADDRSTRLEN + 16];
	const char *lit;
	int ret = 0;

	memset(out, 0, sizeof(*out));
	memset(&b, 0, sizeof(b));
	b.out = out;
	if (domain == NULL || (d = norm_name(domain)) == NULL)
		return q_err(error_r, domain == NULL ? "no domain" : "out of memory");

	r = q_conf_route(conf, d);
	if (r != NULL) {
		ret = add_specs(&b, conf, r->hosts, r->nhosts, d);
	} else if (d[0] == '[') {
		lit = addr_literal(d, buf, sizeof(buf));
		if (lit == NULL) {
			q_err(error_r, "%s: bad address literal", d);
			free(d);
			return Q_ROUTE_PERMANENT;
		}
		ret = add_host(&b, domain, lit, conf->port, -1, false);
	} else if (!domain_ok(d)) {
		q_err(error_r, "%s: not a valid domain name", d);
		free(d);
		return Q_ROUTE_PERMANENT;
	} else {
		char **ips = NULL;
		size_t n = 0, i;
		int hr = Q_NOTFOUND;
		const char *err;

		/* a domain listed in hosts_file: its addresses, no DNS */
		if (conf->hosts_file != NULL && conf->hosts_file[0] != '\0') {
			hr = q_hosts_file_lookup(conf->hosts_file, d, &ips, &n, &err);
			if (hr < 0)
				note(&b, RS_ERR, err);
		}
		if (hr == 0) {
			for (i = 0; i < n && ret == 0; i++)
				ret = add_host(&b, d, ips[i], conf->port, -1, false);
			q_strv_free(&ips, n);
		} else if (hr == Q_NOTFOUND) {
			ret = add_mx(&b, conf, d, conf->port);
		}
	}
	if (ret < 0 && !b.err)
		note(&b, RS_ERR, "out of memory");
	ret = finish(&b, d, error_r);
	free(d);
	return ret;
}

int q_route_fallback(const struct q_conf *conf, const char *domain,
		     struct q_hostlist_r *out, const char **error_r)
{
	if (conf->nfallback == 0) {
		memset(out, 0, sizeof(*out));
		q_err(error_r, "no fallback_hosts configured");
		return Q_ROUTE_PERMANENT;
	}
	return q_route_hosts(conf, conf->fallback_hosts, conf->nfallback,
			     domain, out, error_r);
}

void q_route_free(struct q_hostlist_r *l)
{
	size_t i;

	if (l == NULL)
		return;
	for (i = 0; i < l->n; i++) {
		free(l->h[i].name);
		free(l->h[i].ip);
	}
	free(l->h);
	memset(l, 0, sizeof(*l));
}
