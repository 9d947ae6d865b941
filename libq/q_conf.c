/*
 * q_conf.c - the configuration file qkit.conf: option lines with Exim's
 * smtp-transport names, route lines, retry lines; host lists and the
 * domain patterns shared by routes and retry rules.
 *
 * Syntax (see qkit.conf(5)):
 *   # comment                     (only at the start of a line)
 *   name = value                  (value trimmed; "..." quotes allowed)
 *   name / no_name                (booleans only: true / false)
 *   route PATTERN = HOST[:PORT] ...
 *   retry PATTERN ERROR ALGORITHMS
 * A line ending in a backslash continues on the next one (whose leading
 * blanks are dropped); errors then name the line where it started.
 *
 * Invariants:
 *  - q_conf_load either returns a complete, validated config or -1 and
 *    nothing (no partial config ever reaches a caller);
 *  - every error reads "FILE:LINE: what was expected";
 *  - an option set twice is an error, not "last one wins";
 *  - q_conf_print writes a file that q_conf_load reads back to an equal
 *    config (times exactly, strings quoted where needed).
 *
 * Weak spots: q_conf_route and q_hostlist_match are linear scans of the
 * lists (fine for the tens of entries a config has); host list items
 * that are IP networks are parsed again at every match.
 */
#include "config.h"
#include "q/conf.h"
#include "q/util.h"
#include "q_private.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define CONF_MAX_SIZE (16u * 1024 * 1024)

/* ------------------------------------------------------------------ */
/* option table */

enum opt_type {
	OPT_STR,        /* char *; empty value = unset (NULL) */
	OPT_PATH_REQ,   /* char *; must not be empty */
	OPT_HOSTNAME,   /* char *; a host name */
	OPT_IP,         /* char *; an IP address, empty = unset */
	OPT_UINT,       /* unsigned within [min, max] */
	OPT_INT,        /* long long, may be negative */
	OPT_TIME,       /* long long seconds >= min, <= max when max > 0 */
	OPT_BOOL,
	OPT_HOSTLIST,   /* struct q_hostlist */
	OPT_HOSTS,      /* struct q_hostspec * + size_t count (fallback_hosts) */
};

struct opt {
	const char *name;
	enum opt_type type;
	size_t off;
	long long min, max;
	size_t off_n;           /* OPT_HOSTS: offset of the count */
};

#define O(name, type, min, max) \
	{ #name, type, offsetof(struct q_conf, name), min, max, 0 }

static const struct opt opts[] = {
	O(spool_directory, OPT_PATH_REQ, 0, 0),
	O(hosts_file, OPT_STR, 0, 0),
	O(primary_hostname, OPT_HOSTNAME, 0, 0),
	O(port, OPT_UINT, 1, 65535),
	O(hosts_max_try, OPT_UINT, 1, UINT_MAX),
	O(max_rcpt, OPT_UINT, 1, UINT_MAX),
	O(batch_max, OPT_UINT, 0, UINT_MAX),
	O(connect_timeout, OPT_TIME, 0, 0),
	O(command_timeout, OPT_TIME, 1, 0),
	O(data_timeout, OPT_TIME, 1, 0),
	O(final_timeout, OPT_TIME, 1, 0),
	{ "fallback_hosts", OPT_HOSTS, offsetof(struct q_conf, fallback_hosts),
	  0, 0, offsetof(struct q_conf, nfallback) },
	O(serialize_hosts, OPT_HOSTLIST, 0, 0),
	O(serialize_max, OPT_UINT, 1, UINT_MAX),
	O(retry_include_ip_address, OPT_BOOL, 0, 0),
	O(hosts_require_tls, OPT_HOSTLIST, 0, 0),
	O(hosts_avoid_tls, OPT_HOSTLIST, 0, 0),
	O(tls_verify_hosts, OPT_HOSTLIST, 0, 0),
	O(tls_verify_certificates, OPT_STR, 0, 0),
	O(tls_certificate, OPT_STR, 0, 0),
	O(tls_privatekey, OPT_STR, 0, 0),
	O(size_addition, OPT_INT, LLONG_MIN, LLONG_MAX),
	O(delay_after_cutoff, OPT_BOOL, 0, 0),
	O(keepalive, OPT_BOOL, 0, 0),
	O(interface, OPT_IP, 0, 0),
	O(remote_max_parallel, OPT_UINT, 1, UINT_MAX),
	O(queue_run_max, OPT_UINT, 0, UINT_MAX),
	O(retry_interval_max, OPT_TIME, 1, Q_RETRY_INTERVAL_LIMIT),
	O(journal_sync, OPT_BOOL, 0, 0),
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

#define FIELD(c, o, T) ((T *)(void *)((char *)(c) + (o)->off))

/* ------------------------------------------------------------------ */
/* small helpers */

static bool is_ws(char c)
{
	return c == ' ' || c == '\t';
}

static char *trim(char *s)
{
	char *e;

	while (is_ws(*s))
		s++;
	e = s + strlen(s);
	while (e > s && is_ws(e[-1]))
		e--;
	*e = '\0';
	return s;
}

/* Escaped copy of a value for an error text: four rotating per-thread
 * buffers, so that one message may show up to four values. */
static const char *shown(const char *s)
{
	static _Thread_local char outs[4][200];
	static _Thread_local unsigned next;
	char *out = outs[next++ % 4];
	struct q_buf b = { 0 };

	if (q_escape_term(&b, s, strlen(s), true) < 0 || b.data == NULL) {
		snprintf(out, sizeof(outs[0]), "?");
	} else if (b.len >= sizeof(outs[0])) {
		snprintf(out, sizeof(outs[0]), "%.*s...", (int)sizeof(outs[0]) - 4,
			 b.data);
	} else {
		memcpy(out, b.data, b.len + 1);
	}
	q_buf_free(&b);
	return out;
}

/* Damerau-Levenshtein distance (optimal string alignment), capped. */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), i, j;
	size_t d[40][40];

	if (la >= 40 || lb >= 40)
		return 99;
	for (i = 0; i <= la; i++)
		d[i][0] = i;
	for (j = 0; j <= lb; j++)
		d[0][j] = j;
	for (i = 1; i <= la; i++) {
		for (j = 1; j <= lb; j++) {
			size_t c = a[i - 1] == b[j - 1] ? 0 : 1;
			size_t v = d[i - 1][j] + 1;

			if (d[i][j - 1] + 1 < v)
				v = d[i][j - 1] + 1;
			if (d[i - 1][j - 1] + c < v)
				v = d[i - 1][j - 1] + c;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] &&
			    a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
				v = d[i - 2][j - 2] + 1;
			d[i][j] = v;
		}
	}
	return d[la][lb];
}

static bool valid_hostname(const char *s)
{
	size_t label = 0, total = 0;
	const char *p;

	if (*s == '\0')
		return false;
	for (p = s; *p != '\0'; p++, total++) {
		unsigned char c = (unsigned char)*p;

		if (c == '.') {
			if (label == 0 || p[-1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!isalnum(c) && c != '-' && c != '_')
			return false;
		if (label == 0 && c == '-')
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0 && p[-1] != '-' && total <= 253;
}

static bool parse_ip(const char *s, int *af_r, unsigned char bin[16])
{
	if (inet_pton(AF_INET, s, bin) == 1) {
		*af_r = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, s, bin) == 1) {
		*af_r = AF_INET6;
		return true;
	}
	return false;
}

static bool parse_port(const char *s, unsigned *port_r)
{
	unsigned long v = 0;
	const char *p;

	if (strcasecmp(s, "smtp") == 0) {
		*port_r = 25;
		return true;
	}
	if (strcasecmp(s, "submission") == 0) {
		*port_r = 587;
		return true;
	}
	if (*s == '\0')
		return false;
	for (p = s; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (unsigned long)(*p - '0');
		if (v > 65535)
			return false;
	}
	if (v == 0)
		return false;
	*port_r = (unsigned)v;
	return true;
}

/* Split a list at spaces and commas: returns the next item (NUL-ended in
 * place) or NULL at the end. */
static char *next_item(char **sp)
{
	char *s = *sp, *start;

	while (*s != '\0' && (is_ws(*s) || *s == ','))
		s++;
	if (*s == '\0') {
		*sp = s;
		return NULL;
	}
	start = s;
	while (*s != '\0' && !is_ws(*s) && *s != ',')
		s++;
	if (*s != '\0')
		*s++ = '\0';
	*sp = s;
	return start;
}

/* ------------------------------------------------------------------ */
/* host specs: route targets and fallback_hosts */

static void hostspecs_free(struct q_hostspec **hs, size_t *n)
{
	size_t i;

	for (i = 0; i < *n; i++)
		free((*hs)[i].name);
	free(*hs);
	*hs = NULL;
	*n = 0;
}

/* Parse one HOST[:PORT] item into h. On error, writes why. */
static int parse_hostspec(char *item, bool allow_mx, struct q_hostspec *h,
			  char *why, size_t whylen)
{
	char *name = item, *port = NULL;
	unsigned char bin[16];
	int af;

	h->name = NULL;
	h->port = 0;
	h->mx = false;
	if (*item == '[') {
		char *close = strchr(item, ']');

		if (close == NULL) {
			snprintf(why, whylen, "'%s': '[' without ']'", shown(item));
			return -1;
		}
		*close = '\0';
		name = item + 1;
		if (close[1] == ':')
			port = close + 2;
		else if (close[1] != '\0') {
			snprintf(why, whylen, "'%s]%s': expected ':PORT' after ']'",
				 shown(item), shown(close + 1));
			return -1;
		}
		if (!parse_ip(name, &af, bin)) {
			snprintf(why, whylen, "'[%s]' is not an IP address",
				 shown(name));
			return -1;
		}
	} else {
		char *colon = strchr(item, ':');

		if (colon != NULL && strchr(colon + 1, ':') != NULL) {
			snprintf(why, whylen, "'%s': write IPv6 addresses in "
				 "brackets, e.g. [::1]:2525", shown(item));
			return -1;
		}
		if (colon != NULL) {
			*colon = '\0';
			port = colon + 1;
		}
		if (strcasecmp(name, "mx") == 0) {
			if (!allow_mx) {
				snprintf(why, whylen, "'mx' is allowed only in "
					 "route lines");
				return -1;
			}
			h->mx = true;
			name = "mx";
		} else if (!valid_hostname(name)) {
			snprintf(why, whylen, "'%s' is not a host name or IP "
				 "address", shown(name));
			return -1;
		}
	}
	if (port != NULL && !parse_port(port, &h->port)) {
		snprintf(why, whylen, "'%s': expected a port number from 1 to "
			 "65535", shown(port));
		return -1;
	}
	h->name = strdup(name);
	if (h->name == NULL) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	return 0;
}

static int parse_hostspecs(char *s, bool allow_mx, struct q_hostspec **hs_r,
			   size_t *n_r, char *why, size_t whylen)
{
	struct q_hostspec *hs = NULL;
	size_t n = 0;
	char *item;

	while ((item = next_item(&s)) != NULL) {
		struct q_hostspec *nh = realloc(hs, (n + 1) * sizeof(*hs));

		if (nh == NULL) {
			snprintf(why, whylen, "out of memory");
			hostspecs_free(&hs, &n);
			return -1;
		}
		hs = nh;
		if (parse_hostspec(item, allow_mx, &hs[n], why, whylen) < 0) {
			hostspecs_free(&hs, &n);
			return -1;
		}
		n++;
	}
	*hs_r = hs;
	*n_r = n;
	return 0;
}

/* ------------------------------------------------------------------ */
/* host lists */

static void hostlist_free(struct q_hostlist *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->items[i]);
	free(l->items);
	l->items = NULL;
	l->n = 0;
}

/* Parse "a.b.c.d/len", "v6/len", "[v6]/len", or a plain address (full
 * length). Returns false when item is not an IP or network. */
static bool parse_net(const char *item, int *af_r, unsigned char bin[16],
		      unsigned *bits_r, bool *bad_r)
{
	char tmp[INET6_ADDRSTRLEN + 8];
	const char *slash;
	size_t n;

	*bad_r = false;
	slash = strchr(item, '/');
	n = slash != NULL ? (size_t)(slash - item) : strlen(item);
	if (n >= sizeof(tmp))
		return false;
	memcpy(tmp, item, n);
	tmp[n] = '\0';
	if (n >= 2 && tmp[0] == '[' && tmp[n - 1] == ']') {
		memmove(tmp, tmp + 1, n - 2);
		tmp[n - 2] = '\0';
	}
	if (!parse_ip(tmp, af_r, bin)) {
		/* something that looks like a network but is not one */
		if (slash != NULL)
			*bad_r = true;
		return false;
	}
	*bits_r = *af_r == AF_INET ? 32 : 128;
	if (slash != NULL) {
		unsigned long v = 0;
		const char *p = slash + 1;

		if (*p == '\0') {
			*bad_r = true;
			return false;
		}
		for (; *p != '\0'; p++) {
			if (*p < '0' || *p > '9' || (v = v * 10 + (unsigned long)(*p - '0')) > *bits_r) {
				*bad_r = true;
				return false;
			}
		}
		*bits_r = (unsigned)v;
	}
	return true;
}

static bool valid_glob(const char *s)
{
	const char *p;

	if (*s == '\0')
		return false;
	for (p = s; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;

		if (!isalnum(c) && strchr("-._*?[]!^", c) == NULL)
			return false;
	}
	return true;
}

/* "*@domain" or "local@domain" (retry rules for addresses) */
static bool valid_addr_pattern(const char *s)
{
	const char *at = strrchr(s, '@'), *p;

	if (at == NULL || at == s || !valid_glob(at + 1))
		return false;
	for (p = s; p < at; p++)
		if ((unsigned char)*p <= ' ' || *p == '"' || *p == '@')
			return false;
	return true;
}

static int parse_hostlist(char *s, struct q_hostlist *l, char *why, size_t whylen)
{
	char *item;

	l->n = 0;
	l->items = NULL;
	while ((item = next_item(&s)) != NULL) {
		const char *body = item[0] == '!' ? item + 1 : item;
		unsigned char bin[16];
		unsigned bits;
		bool bad;
		int af;
		char **ni, *dup;

		if (!parse_net(body, &af, bin, &bits, &bad)) {
			if (bad) {
				snprintf(why, whylen, "'%s' is not an IP network "
					 "such as 192.0.2.0/24 or 2001:db8::/32",
					 shown(body));
				goto fail;
			}
			if (strcmp(body, "*") != 0 && !valid_glob(body)) {
				snprintf(why, whylen, "'%s' is not a host name, "
					 "pattern, IP address or network",
					 shown(item));
				goto fail;
			}
		}
		ni = realloc(l->items, (l->n + 1) * sizeof(*ni));
		if (ni == NULL)
			goto oom;
		l->items = ni;
		dup = strdup(item);
		if (dup == NULL)
			goto oom;
		l->items[l->n++] = dup;
	}
	return 0;
oom:
	snprintf(why, whylen, "out of memory");
fail:
	hostlist_free(l);
	return -1;
}

static bool net_contains(int af, const unsigned char *net, unsigned bits,
			 int af2, const unsigned char *ip)
{
	unsigned full, rest;

	if (af == AF_INET6 && af2 == AF_INET) {
		return false;
	}
	if (af == AF_INET && af2 == AF_INET6) {
		/* an IPv4-mapped IPv6 address matches IPv4 networks */
		static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0,
							  0, 0, 0xff, 0xff };

		if (memcmp(ip, mapped, 12) != 0)
			return false;
		ip += 12;
	}
	full = bits / 8;
	rest = bits % 8;
	if (memcmp(net, ip, full) != 0)
		return false;
	if (rest != 0) {
		unsigned char mask = (unsigned char)(0xff << (8 - rest));

		if ((net[full] & mask) != (ip[full] & mask))
			return false;
	}
	return true;
}

bool q_hostlist_match(const struct q_hostlist *l, const char *name,
		      const char *ip)
{
	unsigned char ipbin[16];
	int ipaf = 0;
	bool have_ip = false;
	size_t i;

	if (l == NULL)
		return false;
	if (ip != NULL && *ip != '\0')
		have_ip = parse_ip(ip, &ipaf, ipbin);
	if (!have_ip && name != NULL)
		have_ip = parse_ip(name, &ipaf, ipbin);
	for (i = 0; i < l->n; i++) {
		const char *item = l->items[i];
		bool neg = item[0] == '!', hit = false, bad;
		const char *body = neg ? item + 1 : item;
		unsigned char net[16];
		unsigned bits;
		int af;

		if (strcmp(body, "*") == 0)
			hit = true;
		else if (parse_net(body, &af, net, &bits, &bad))
			hit = have_ip && net_contains(af, net, bits, ipaf, ipbin);
		else if (name != NULL && *name != '\0')
			hit = q_pattern_match(body, name);
		if (hit)
			return !neg;
	}
	return false;
}

/* ------------------------------------------------------------------ */
/* patterns and routes */

static bool domain_match(const char *pattern, const char *subject)
{
	if (strcmp(pattern, "*") == 0)
		return true;
	if (pattern[0] == '*' && pattern[1] == '.' &&
	    strpbrk(pattern + 2, "*?[") == NULL) {
		size_t lp = strlen(pattern + 1), ls = strlen(subject);

		/* "*.example.com": strictly below example.com */
		return ls > lp && strcasecmp(subject + ls - lp, pattern + 1) == 0;
	}
	if (strpbrk(pattern, "*?[") != NULL)
		return fnmatch(pattern, subject, FNM_CASEFOLD) == 0;
	return strcasecmp(pattern, subject) == 0;
}

bool q_pattern_match(const char *pattern, const char *subject)
{
	if (pattern == NULL || subject == NULL)
		return false;
	if (pattern[0] == '*' && pattern[1] == '@') {
		/* "*@domain": the domain of an address; a bare domain (a
		 * routing or host key) is taken as that domain */
		const char *at = strrchr(subject, '@');

		return domain_match(pattern + 2, at != NULL ? at + 1 : subject);
	}
	if (strchr(pattern, '@') == NULL) {
		const char *at = strrchr(subject, '@');

		if (at != NULL)
			subject = at + 1;
	}
	return domain_match(pattern, subject);
}

const struct q_route *q_conf_route(const struct q_conf *conf, const char *domain)
{
	size_t i;

	if (conf == NULL || domain == NULL)
		return NULL;
	for (i = 0; i < conf->nroutes; i++)
		if (q_pattern_match(conf->routes[i].pattern, domain))
			return &conf->routes[i];
	return NULL;
}

/* ------------------------------------------------------------------ */
/* locate, defaults, free */

const char *q_conf_locate(const char *path)
{
	static const char sys[] = SYSCONFDIR "/qkit.conf";
	const char *env;

	if (path != NULL)
		return path;
	env = getenv("QKIT_CONFIG");
	if (env != NULL && *env != '\0')
		return env;
	if (access(sys, F_OK) == 0)
		return sys;
	return NULL;
}

static int set_defaults(struct q_conf *c)
{
	char host[256];

	c->spool_directory = strdup(LOCALSTATEDIR "/spool/qkit");
	if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	c->primary_hostname = strdup(host);
	c->port = 25;
	c->hosts_max_try = 5;
	c->max_rcpt = 100;
	c->batch_max = 500;
	c->connect_timeout = 5 * 60;
	c->command_timeout = 5 * 60;
	c->data_timeout = 5 * 60;
	c->final_timeout = 10 * 60;
	c->serialize_max = 1;
	c->retry_include_ip_address = true;
	c->size_addition = 1024;
	c->delay_after_cutoff = true;
	c->keepalive = true;
	c->remote_max_parallel = 2;
	c->queue_run_max = 5;
	c->journal_sync = true;
	c->retry_interval_max = 24 * 3600;
	if (c->spool_directory == NULL || c->primary_hostname == NULL)
		return -1;
	return 0;
}

static void retry_rule_free(struct q_retry_rule *r)
{
	free(r->pattern);
	free(r->kind);
	r->pattern = NULL;
	r->kind = NULL;
	q_retry_rule_clear(r);
}

void q_conf_free(struct q_conf **confp)
{
	struct q_conf *c = *confp;
	size_t i;

	if (c == NULL)
		return;
	for (i = 0; i < NOPTS; i++) {
		const struct opt *o = &opts[i];

		switch (o->type) {
		case OPT_STR: case OPT_PATH_REQ: case OPT_HOSTNAME: case OPT_IP:
			free(*FIELD(c, o, char *));
			break;
		case OPT_HOSTLIST:
			hostlist_free(FIELD(c, o, struct q_hostlist));
			break;
		case OPT_HOSTS:
			hostspecs_free(FIELD(c, o, struct q_hostspec *),
				       (size_t *)(void *)((char *)c + o->off_n));
			break;
		default:
			break;
		}
	}
	for (i = 0; i < c->nroutes; i++) {
		free(c->routes[i].pattern);
		hostspecs_free(&c->routes[i].hosts, &c->routes[i].nhosts);
	}
	free(c->routes);
	for (i = 0; i < c->nretry; i++)
		retry_rule_free(&c->retry[i]);
	free(c->retry);
	free(c->path);
	free(c);
	*confp = NULL;
}

/* ------------------------------------------------------------------ */
/* the parser */

struct parser {
	const char *file;
	unsigned line;
	unsigned set_at[NOPTS];        /* line where each option was set */
	struct q_conf *c;
	const char **error_r;
};

#define PERR(p, ...) perr(p, __VA_ARGS__)

static int perr(struct parser *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int perr(struct parser *p, const char *fmt, ...)
{
	char msg[800];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return q_err(p->error_r, "%s:%u: %s", p->file, p->line, msg);
}

/* Unquote a "..." value in place (\\ and \" escapes). 0 or -1. */
static int unquote(char *v)
{
	char *r = v + 1, *w = v;

	while (*r != '"') {
		if (*r == '\0')
			return -1;
		if (*r == '\\' && (r[1] == '\\' || r[1] == '"'))
			r++;
		*w++ = *r++;
	}
	if (r[1] != '\0')
		return -1;
	*w = '\0';
	return 0;
}

static int parse_uint(const char *v, long long *out)
{
	unsigned long long x = 0, mult = 1;
	const char *p = v;
	bool neg = false;

	if (*p == '-') {
		neg = true;
		p++;
	}
	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned long long d = (unsigned long long)(*p - '0');
		/* checked before it can wrap: 2^64 must not load as 0 */
		if (x > ((unsigned long long)LLONG_MAX - d) / 10)
			return -1;
		x = x * 10 + d;
	}
	if (*p == 'K' || *p == 'k')
		mult = 1024, p++;
	else if (*p == 'M' || *p == 'm')
		mult = 1024 * 1024, p++;
	if (*p != '\0')
		return -1;
	if (x > (unsigned long long)LLONG_MAX / mult)
		return -1;
	*out = (long long)(x * mult);
	if (neg)
		*out = -*out;
	return 0;
}

static int parse_bool(const char *v, bool *out)
{
	static const char *const t[] = { "true", "yes", "1", "on" };
	static const char *const f[] = { "false", "no", "0", "off" };
	size_t i;

	for (i = 0; i < 4; i++) {
		if (strcasecmp(v, t[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(v, f[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

static int bad_value(struct parser *p, const struct opt *o, const char *expected,
		     const char *v)
{
	if (*v == '\0')
		return PERR(p, "%s: expected %s, got nothing", o->name, expected);
	return PERR(p, "%s: expected %s, not '%s'", o->name, expected, shown(v));
}

static int set_option(struct parser *p, const struct opt *o, char *v)
{
	struct q_conf *c = p->c;
	char why[400];
	long long n;

	if (v[0] == '"') {
		if (o->type != OPT_STR && o->type != OPT_PATH_REQ)
			return PERR(p, "%s: quotes are allowed only around "
				    "file names", o->name);
		if (unquote(v) < 0)
			return PERR(p, "%s: unterminated quoted string, or text "
				    "after the closing quote", o->name);
	}
	switch (o->type) {
	case OPT_STR:
	case OPT_PATH_REQ:
	case OPT_HOSTNAME:
	case OPT_IP: {
		char **f = FIELD(c, o, char *), *dup = NULL;

		if (*v == '\0' && o->type == OPT_PATH_REQ)
			return bad_value(p, o, "a directory name", v);
		if (o->type == OPT_HOSTNAME && !valid_hostname(v))
			return bad_value(p, o, "a host name such as "
					 "mail.example.com", v);
		if (o->type == OPT_IP && *v != '\0') {
			unsigned char bin[16];
			int af;

			if (v[0] == '[' && v[strlen(v) - 1] == ']') {
				memmove(v, v + 1, strlen(v));
				v[strlen(v) - 1] = '\0';
			}
			if (!parse_ip(v, &af, bin))
				return bad_value(p, o, "an IP address of this "
						 "machine such as 192.0.2.1 or "
						 "2001:db8::1", v);
		}
		if (*v != '\0' && (dup = strdup(v)) == NULL)
			return PERR(p, "out of memory");
		free(*f);
		*f = dup;
		return 0;
	}
	case OPT_UINT:
		if (o->min == 1 && o->max == 65535) {
			unsigned port;

			if (!parse_port(v, &port))
				return bad_value(p, o, "a port number from 1 to "
						 "65535", v);
			*FIELD(c, o, unsigned) = port;
			return 0;
		}
		if (parse_uint(v, &n) < 0 || n < 0 || n > o->max) {
			if (o->min > 0)
				return bad_value(p, o, "a whole number of at least "
						 "1", v);
			return bad_value(p, o, "a whole number (0 or more)", v);
		}
		if (n < o->min)
			return PERR(p, "%s: must be at least %lld", o->name, o->min);
		*FIELD(c, o, unsigned) = (unsigned)n;
		return 0;
	case OPT_INT:
		if (parse_uint(v, &n) < 0)
			return bad_value(p, o, "a whole number (negative "
					 "disables SIZE)", v);
		*FIELD(c, o, long long) = n;
		return 0;
	case OPT_TIME:
		if (q_time_parse(v, &n) < 0)
			return bad_value(p, o, "a time such as 30s, 5m, 2h", v);
		if (n < o->min)
			return PERR(p, "%s: must not be zero", o->name);
		if (o->max > 0 && n > o->max) {
			char b[32];

			return PERR(p, "%s: must be at most %s, not '%s'", o->name,
				    q_time_format(o->max, b, sizeof(b)), shown(v));
		}
		*FIELD(c, o, long long) = n;
		return 0;
	case OPT_BOOL: {
		bool b;

		if (parse_bool(v, &b) < 0)
			return bad_value(p, o, "true or false (or yes/no, 1/0)", v);
		*FIELD(c, o, bool) = b;
		return 0;
	}
	case OPT_HOSTLIST: {
		struct q_hostlist *l = FIELD(c, o, struct q_hostlist), nl;

		if (parse_hostlist(v, &nl, why, sizeof(why)) < 0)
			return PERR(p, "%s: %s", o->name, why);
		hostlist_free(l);
		*l = nl;
		return 0;
	}
	case OPT_HOSTS: {
		struct q_hostspec **hs = FIELD(c, o, struct q_hostspec *), *nh;
		size_t *cnt = (size_t *)(void *)((char *)c + o->off_n), nn;

		if (parse_hostspecs(v, false, &nh, &nn, why, sizeof(why)) < 0)
			return PERR(p, "%s: %s", o->name, why);
		hostspecs_free(hs, cnt);
		*hs = nh;
		*cnt = nn;
		return 0;
	}
	}
	return PERR(p, "internal error: option type");
}

static const struct opt *find_opt(const char *name)
{
	size_t i;

	for (i = 0; i < NOPTS; i++)
		if (strcmp(opts[i].name, name) == 0)
			return &opts[i];
	return NULL;
}

static int unknown_option(struct parser *p, const char *name)
{
	size_t i, best = 99;
	const char *sugg = NULL;

	for (i = 0; i < NOPTS; i++) {
		size_t d = edit_distance(name, opts[i].name);

		if (d < best) {
			best = d;
			sugg = opts[i].name;
		}
	}
	if (sugg != NULL && best <= 2)
		return PERR(p, "unknown option '%s' (did you mean '%s'?)",
			    shown(name), sugg);
	return PERR(p, "unknown option '%s'", shown(name));
}

static int option_line(struct parser *p, char *s)
{
	const struct opt *o;
	char *v;
	size_t nl = strspn(s, "abcdefghijklmnopqrstuvwxyz"
			   "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_");
	bool has_eq;

	if (nl == 0)
		return PERR(p, "expected an option name, 'route' or 'retry', "
			    "not '%s'", shown(s));
	v = s + nl;
	while (is_ws(*v))
		v++;
	if (*v != '=' && *v != '\0')
		return PERR(p, "expected '=' after '%.*s'", (int)nl, s);
	has_eq = *v == '=';
	s[nl] = '\0';                /* may overwrite the '=': v is past it */
	if (strcmp(s, "route") == 0)
		return PERR(p, "route: expected 'route PATTERN = HOST[:PORT] ...'");
	if (strcmp(s, "retry") == 0)
		return PERR(p, "retry: expected 'retry PATTERN ERROR ALGORITHMS'");
	if (has_eq) {
		o = find_opt(s);
		if (o == NULL)
			return unknown_option(p, s);
		v = trim(v + 1);
	} else {
		/* a bare boolean: "keepalive" (true) or "no_keepalive" */
		bool no = false;

		o = find_opt(s);
		if (o == NULL && strncmp(s, "no_", 3) == 0 &&
		    (o = find_opt(s + 3)) != NULL)
			no = true;
		if (o == NULL)
			return unknown_option(p, s);
		if (o->type != OPT_BOOL)
			return PERR(p, "expected '=' after '%s'", s);
		v = no ? "false" : "true";
	}
	if (p->set_at[o - opts] != 0)
		return PERR(p, "%s set twice (first at line %u)", o->name,
			    p->set_at[o - opts]);
	p->set_at[o - opts] = p->line;
	return set_option(p, o, v);
}

/* The first word of s (NUL-ended in place); *rest after it. */
static char *word(char *s, char **rest)
{
	char *e;

	while (is_ws(*s))
		s++;
	if (*s == '\0') {
		*rest = s;
		return NULL;
	}
	e = s;
	while (*e != '\0' && !is_ws(*e))
		e++;
	if (*e != '\0')
		*e++ = '\0';
	while (is_ws(*e))
		e++;
	*rest = e;
	return s;
}

static int route_line(struct parser *p, char *s)
{
	struct q_conf *c = p->c;
	struct q_route r = { 0 }, *nr;
	char *pattern, *eq, why[400];

	eq = strchr(s, '=');
	if (eq == NULL)
		return PERR(p, "route: expected 'route PATTERN = HOST[:PORT] ...'");
	*eq = '\0';
	pattern = trim(s);
	if (*pattern == '\0')
		return PERR(p, "route: expected a domain pattern before '='");
	if (strpbrk(pattern, " \t,") != NULL)
		return PERR(p, "route: expected one domain pattern before '=', "
			    "not '%s'", shown(pattern));
	if (strcmp(pattern, "*") != 0 && !valid_glob(pattern))
		return PERR(p, "route: '%s' is not a domain pattern such as "
			    "example.com, *.example.com or *", shown(pattern));
	if (parse_hostspecs(eq + 1, true, &r.hosts, &r.nhosts, why, sizeof(why)) < 0)
		return PERR(p, "route %s: %s", shown(pattern), why);
	if (r.nhosts == 0)
		return PERR(p, "route %s: expected at least one host after '=' "
			    "(HOST[:PORT], [IPv6]:PORT or mx)", shown(pattern));
	r.pattern = strdup(pattern);
	nr = r.pattern == NULL ? NULL
	     : realloc(c->routes, (c->nroutes + 1) * sizeof(*nr));
	if (nr == NULL) {
		free(r.pattern);
		hostspecs_free(&r.hosts, &r.nhosts);
		return PERR(p, "out of memory");
	}
	c->routes = nr;
	c->routes[c->nroutes++] = r;
	return 0;
}

static int retry_line(struct parser *p, char *s)
{
	struct q_conf *c = p->c;
	struct q_retry_rule r, *nr;
	char *pattern, *kind, *rest;
	const char *err;

	memset(&r, 0, sizeof(r));
	pattern = word(s, &rest);
	kind = pattern != NULL ? word(rest, &rest) : NULL;
	if (pattern == NULL || kind == NULL)
		return PERR(p, "retry: expected 'retry PATTERN ERROR ALGORITHMS', "
			    "e.g. 'retry * * F,2h,15m; G,16h,1h,1.5; F,4d,6h'");
	if (strcmp(pattern, "*") != 0 && !valid_glob(pattern) &&
	    !valid_addr_pattern(pattern))
		return PERR(p, "retry: '%s' is not a host, domain or address "
			    "pattern such as example.com, *.example.com, "
			    "*@example.com or *",
			    shown(pattern));
	if (!q_retry_kind_valid(kind))
		return PERR(p, "retry %s: unknown error kind '%s' (expected *, "
			    "refused, timeout_connect, timeout, lost_connection, "
			    "rcpt_4xx, mail_4xx, data_4xx, tls_required, lookup, ...)",
			    shown(pattern), shown(kind));
	rest = trim(rest);
	if (*rest == '\0')
		return PERR(p, "retry %s %s: expected retry algorithms such as "
			    "F,2h,15m; G,16h,1h,1.5; F,4d,6h", shown(pattern),
			    shown(kind));
	if (q_retry_parse_algos(rest, &r, &err) < 0) {
		char why[600];

		snprintf(why, sizeof(why), "%s", err);
		q_retry_rule_clear(&r);
		return PERR(p, "retry %s %s: %s", shown(pattern), shown(kind), why);
	}
	r.pattern = strdup(pattern);
	r.kind = strdup(kind);
	nr = r.pattern == NULL || r.kind == NULL ? NULL
	     : realloc(c->retry, (c->nretry + 1) * sizeof(*nr));
	if (nr == NULL) {
		retry_rule_free(&r);
		return PERR(p, "out of memory");
	}
	c->retry = nr;
	c->retry[c->nretry++] = r;
	return 0;
}

static int parse_line(struct parser *p, char *s)
{
	const unsigned char *u;
	char *rest;

	for (u = (const unsigned char *)s; *u != '\0'; u++)
		if ((*u < 0x20 && *u != '\t') || *u == 0x7f)
			return PERR(p, "control character \\x%02x in the line", *u);
	s = trim(s);
	if (*s == '\0' || *s == '#')
		return 0;
	if (strncmp(s, "route", 5) == 0 && is_ws(s[5])) {
		rest = s + 5;
		while (is_ws(*rest))
			rest++;
		if (*rest != '=')
			return route_line(p, rest);
	}
	if (strncmp(s, "retry", 5) == 0 && is_ws(s[5])) {
		rest = s + 5;
		while (is_ws(*rest))
			rest++;
		if (*rest != '=')
			return retry_line(p, rest);
	}
	return option_line(p, s);
}

static int check_whole(struct parser *p)
{
	const struct opt *key = find_opt("tls_privatekey");

	if (p->c->tls_privatekey != NULL && p->c->tls_certificate == NULL) {
		p->line = p->set_at[key - opts];
		return PERR(p, "tls_privatekey is set but tls_certificate is not");
	}
	return 0;
}

static int parse_text(struct parser *p, char *text, size_t len)
{
	struct q_buf logical = { 0 };
	size_t pos = 0;
	unsigned lineno = 0, start_line = 0;
	int ret = 0;

	if (memchr(text, '\0', len) != NULL) {
		const char *z = memchr(text, '\0', len);
		const char *q;

		p->line = 1;
		for (q = text; q < z; q++)
			if (*q == '\n')
				p->line++;
		return PERR(p, "NUL byte in the line (is this a text file?)");
	}
	while (pos < len && ret == 0) {
		char *nl = memchr(text + pos, '\n', len - pos);
		size_t end = nl != NULL ? (size_t)(nl - text) : len, n = end - pos;
		bool cont;

		lineno++;
		if (n > 0 && text[pos + n - 1] == '\r')
			n--;
		if (logical.len == 0) {
			start_line = lineno;
		} else {
			/* a continuation: its leading blanks are dropped */
			while (n > 0 && is_ws(text[pos])) {
				pos++;
				n--;
			}
		}
		cont = n > 0 && text[pos + n - 1] == '\\' &&
		       !(logical.len == 0 &&
			 text[pos + strspn(text + pos, " \t")] == '#');
		if (cont)
			n--;
		if (q_buf_add(&logical, text + pos, n) < 0 ||
		    q_buf_reserve(&logical, 0) < 0) {
			ret = q_err(p->error_r, "%s: out of memory", p->file);
			break;
		}
		pos = end + 1;
		if (cont && pos < len)
			continue;
		if (cont) {
			p->line = start_line;
			ret = PERR(p, "the line ends in '\\' (continued) but "
				   "the file ends there");
			break;
		}
		p->line = start_line;
		ret = parse_line(p, logical.data);
		q_buf_reset(&logical);
	}
	q_buf_free(&logical);
	if (ret == 0)
		ret = check_whole(p);
	return ret;
}

int q_conf_load(const char *path, struct q_conf **conf_r, const char **error_r)
{
	struct parser p;
	struct q_conf *c;
	struct q_buf text = { 0 };
	FILE *f;
	int ret;

	*conf_r = NULL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return q_err(error_r, "out of memory");
	if (set_defaults(c) < 0) {
		q_conf_free(&c);
		return q_err(error_r, "out of memory");
	}
	if (path == NULL) {
		*conf_r = c;
		return 0;
	}
	c->path = strdup(path);
	if (c->path == NULL) {
		q_conf_free(&c);
		return q_err(error_r, "out of memory");
	}
	f = fopen(path, "re");
	if (f == NULL) {
		int e = errno;

		q_conf_free(&c);
		return q_err(error_r, "%s: cannot open: %s", path, strerror(e));
	}
	for (;;) {
		size_t n;

		if (q_buf_reserve(&text, 65536) < 0) {
			fclose(f);
			q_buf_free(&text);
			q_conf_free(&c);
			return q_err(error_r, "%s: out of memory", path);
		}
		n = fread(text.data + text.len, 1, 65536, f);
		text.len += n;
		text.data[text.len] = '\0';
		if (text.len > CONF_MAX_SIZE) {
			fclose(f);
			q_buf_free(&text);
			q_conf_free(&c);
			return q_err(error_r, "%s: larger than %u bytes: not a "
				     "configuration file?", path, CONF_MAX_SIZE);
		}
		if (n < 65536)
			break;
	}
	if (ferror(f)) {
		int e = errno;

		fclose(f);
		q_buf_free(&text);
		q_conf_free(&c);
		return q_err(error_r, "%s: read error: %s", path, strerror(e));
	}
	fclose(f);
	memset(&p, 0, sizeof(p));
	p.file = path;
	p.c = c;
	p.error_r = error_r;
	ret = parse_text(&p, text.data, text.len);
	q_buf_free(&text);
	if (ret < 0) {
		q_conf_free(&c);
		return -1;
	}
	*conf_r = c;
	return 0;
}

/* ------------------------------------------------------------------ */
/* printing */

/* Exact time: every non-zero unit ("1d2h3m4s"), "0s" for zero. */
static void print_time(FILE *f, long long v)
{
	static const struct { char c; long long n; } u[] = {
		{ 'w', 7 * 86400 }, { 'd', 86400 }, { 'h', 3600 }, { 'm', 60 },
		{ 's', 1 },
	};
	size_t i;

	if (v <= 0) {
		fputs("0s", f);
		return;
	}
	for (i = 0; i < 5; i++) {
		if (v >= u[i].n) {
			fprintf(f, "%lld%c", v / u[i].n, u[i].c);
			v %= u[i].n;
		}
	}
}

static void print_string(FILE *f, const char *s)
{
	const char *p;
	bool quote;

	if (s == NULL)
		return;
	quote = s[0] == '"' || is_ws(s[0]) || is_ws(s[strlen(s) - 1]) ||
		s[strlen(s) - 1] == '\\';
	if (!quote) {
		fputs(s, f);
		return;
	}
	fputc('"', f);
	for (p = s; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\')
			fputc('\\', f);
		fputc(*p, f);
	}
	fputc('"', f);
}

static void print_hostspecs(FILE *f, const struct q_hostspec *hs, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (i > 0)
			fputc(' ', f);
		if (strchr(hs[i].name, ':') != NULL)
			fprintf(f, "[%s]", hs[i].name);
		else
			fputs(hs[i].name, f);
		if (hs[i].port != 0)
			fprintf(f, ":%u", hs[i].port);
	}
}

/* A retry factor, which q_retry keeps in whole thousandths: as
 * digits [. up to 3 digits], without trailing zeros. Written by hand:
 * printf's %f follows LC_NUMERIC (a decimal comma in some locales) and
 * the programs call setlocale(). */
static void print_factor(FILE *f, double x)
{
	unsigned long long th;
	unsigned frac;
	int nd = 3;

	if (!(x >= 0.0 && x < 1e15)) {
		fputs("0", f);
		return;
	}
	th = (unsigned long long)(x * 1000.0 + 0.5);
	frac = (unsigned)(th % 1000);
	fprintf(f, "%llu", th / 1000);
	if (frac == 0)
		return;
	while (frac % 10 == 0) {
		frac /= 10;
		nd--;
	}
	fprintf(f, ".%0*u", nd, frac);
}

static bool value_empty(const struct q_conf *c, const struct opt *o)
{
	switch (o->type) {
	case OPT_STR: case OPT_PATH_REQ: case OPT_HOSTNAME: case OPT_IP:
		return *FIELD(c, o, char *const) == NULL;
	case OPT_HOSTLIST:
		return FIELD(c, o, const struct q_hostlist)->n == 0;
	case OPT_HOSTS:
		return *(const size_t *)(const void *)((const char *)c + o->off_n) == 0;
	default:
		return false;
	}
}

void q_conf_print(const struct q_conf *c, FILE *f)
{
	size_t i, j;

	fprintf(f, "# qkit configuration (effective values)%s%s\n",
		c->path != NULL ? " read from " : ": built-in defaults",
		c->path != NULL ? shown(c->path) : "");
	for (i = 0; i < NOPTS; i++) {
		const struct opt *o = &opts[i];

		fprintf(f, "%s =%s", o->name, value_empty(c, o) ? "" : " ");
		switch (o->type) {
		case OPT_STR: case OPT_PATH_REQ: case OPT_HOSTNAME: case OPT_IP:
			print_string(f, *FIELD(c, o, char *const));
			break;
		case OPT_UINT:
			fprintf(f, "%u", *FIELD(c, o, const unsigned));
			break;
		case OPT_INT:
			fprintf(f, "%lld", *FIELD(c, o, const long long));
			break;
		case OPT_TIME:
			print_time(f, *FIELD(c, o, const long long));
			break;
		case OPT_BOOL:
			fputs(*FIELD(c, o, const bool) ? "true" : "false", f);
			break;
		case OPT_HOSTLIST: {
			const struct q_hostlist *l = FIELD(c, o, const struct q_hostlist);

			for (j = 0; j < l->n; j++)
				fprintf(f, "%s%s", j > 0 ? ", " : "", l->items[j]);
			break;
		}
		case OPT_HOSTS:
			print_hostspecs(f, *FIELD(c, o, struct q_hostspec *const),
					*(const size_t *)(const void *)
					((const char *)c + o->off_n));
			break;
		}
		fputc('\n', f);
	}
	if (c->nroutes > 0)
		fputs("\n# routes (first match wins)\n", f);
	for (i = 0; i < c->nroutes; i++) {
		fprintf(f, "route %s = ", c->routes[i].pattern);
		print_hostspecs(f, c->routes[i].hosts, c->routes[i].nhosts);
		fputc('\n', f);
	}
	if (c->nretry > 0)
		fputs("\n# retry rules (first match wins; then the default "
		      "* * F,2h,15m; G,16h,1h,1.5; F,4d,6h)\n", f);
	for (i = 0; i < c->nretry; i++) {
		const struct q_retry_rule *r = &c->retry[i];

		fprintf(f, "retry %s %s ", r->pattern, r->kind);
		for (j = 0; j < r->nalgo; j++) {
			const struct q_retry_algo *a = &r->algo[j];

			fprintf(f, "%s%c,", j > 0 ? "; " : "", a->type);
			print_time(f, a->cutoff);
			fputc(',', f);
			print_time(f, a->p1);
			if (a->type != 'F') {   /* G, H: the factor */
				fputc(',', f);
				print_factor(f, a->factor);
			}
		}
		fputc('\n', f);
	}
}
