/*
 * q_retry.c - retry keys, retry records and Exim-style retry rules.
 *
 * Owns: the key formats of the retry database, the record codec
 * (version 1), the rule language "PATTERN ERROR ALGORITHMS" (the parse of
 * the algorithm list and of the error field), rule selection, and the
 * pure next-try computation. The database itself is q_hints; a failure
 * is recorded with one q_hints_update (read-modify-write in one
 * transaction), so concurrent runners never lose each other's updates.
 *
 * Behaviour learned from Exim's retry chapter (no code taken):
 *
 *  next try (q_retry_compute), for a failure at `now`:
 *   1. A record whose last_try is more than Q_RETRY_DATA_EXPIRE (7d, Exim's
 *      retry_data_expire) old, or that has no first_failed, starts afresh:
 *      first_failed = last_try = next_try = now, expired = false.
 *   2. failing = now - first_failed. The algorithm in force is the first
 *      one whose cutoff >= failing (a failure exactly at a cutoff still
 *      belongs to the algorithm that ends there). If there is none, the
 *      record is expired ("retry timeout exceeded") and the LAST
 *      algorithm keeps computing the next try; otherwise expired = false.
 *      A rule without algorithms expires at once and next_try = now.
 *   3. F,cutoff,ival: next_try = now + ival.
 *      G,cutoff,start,factor: lastgap = min(old next_try - old last_try,
 *      now - old last_try) (the smaller of the predicted and the actual
 *      gap: a host tried late is not punished twice); the interval is
 *      `start` when lastgap < start, else lastgap * factor (truncated to
 *      whole seconds; the factor counts to 1/1000, as in Exim). So the
 *      first G interval after a run of 15m F
 *      intervals is `start`, and G never goes below `start`.
 *   4. The interval is capped at interval_max (retry_interval_max,
 *      default 24h, never more than Q_RETRY_INTERVAL_LIMIT, 3d12h):
 *      next_try = min(next_try, now + interval_max).
 *      H,cutoff,start,factor (G's parameters): g is the interval G
 *      would use here (steps 3 and 4, from this record, whose last gap
 *      was H's own); the interval used is chosen in [max(g/2, start),
 *      g] (g when the cap made g < start), "at random" but as a pure
 *      function: a hash of the retry key, first_failed and now. The same
 *      record, key and clock always give the same next try; hosts that
 *      failed at the same moment spread out. Without a key
 *      (q_retry_compute) the hash has only the times.
 *   5. last_try = now.
 *  Every sum and difference of times saturates (at the ends of time_t),
 *  so no rule, interval_max, record or clock makes next_try wrap: it is
 *  always in [now, the largest time_t], non-negative when now is.
 *  Example, default rule, failures at every next try from t=0:
 *   0,15m,...,2h (F), then +1h, +1.5h, +2.25h, +3.375h,... until 16h,
 *   then every 6h; a failure more than 4d after the first is expired.
 *
 *  error field: "*", refused, refused_A, refused_MX, timeout, timeout_A,
 *   timeout_MX, timeout_connect, timeout_connect_A, timeout_connect_MX,
 *   lost_connection, tls_required, auth_failed, quota, lookup (qkit:
 *   routing/DNS failures), mail_4xx, rcpt_4xx, data_4xx with the forms
 *   4xx (any 4xx), 4dx (a decade) and 4dd (one code). Names are matched
 *   case-insensitively. As in Exim: "refused" matches every refusal,
 *   "refused_MX"/"refused_A" only refusals by hosts that did / did not
 *   come from an MX record; "timeout" matches every timeout (connect or
 *   in the session), "timeout_connect" only connect timeouts,
 *   "timeout_A"/"timeout_MX" any timeout of that host class,
 *   "timeout_connect_A"/"_MX" connect timeouts of that class. A failure
 *   whose class is unknown ("refused") is not matched by the class forms.
 *   Exim's quota_<time> is not accepted (qkit has no mailbox ages).
 *
 *  rule patterns: "*@domain" compares the domain part; a pattern without
 *   '@' is matched (q_pattern_match) against a host or domain, and
 *   against the domain part of an address key's address; a pattern with
 *   another local part matches only a whole address.
 *
 * Keys: host names and domains are lower-cased; the port is appended only
 * when it is neither 25 nor 0; an IPv6 address followed by a port is
 * bracketed ("T:h:[::1]:2525"), without a port it is written bare
 * ("T:h:::1"); a host name containing ':' (an IPv6 literal used as a host)
 * is bracketed too, so the host part never contains a bare ':'.
 *
 * Diagnostics: parse errors name the item ("item 2: G needs a factor
 * greater than 1"); a record of an unknown version is refused with its
 * version number, never misread; q_retry_fail refuses to overwrite one.
 *
 * Weak spots: Exim's use of the message age for non-host (address) keys
 * is not done here (q_retry_compute has no arrival time): the runner
 * decides with q_retry_host_use(). Rule selection is a linear scan.
 */
#include "config.h"
#include "q/retry.h"
#include "q/conf.h"
#include "q/hints.h"
#include "q_private.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define REC_VERSION 1
#define DEFAULT_INTERVAL_MAX (24LL * 3600)
#define MAX_ALGOS 32

/* ------------------------------------------------------------------ */
/* keys */

/* Append s lower-cased (ASCII). */
static int add_lower(struct q_buf *out, const char *s)
{
	for (; *s != '\0'; s++) {
		if (q_buf_addc(out, (char)tolower((unsigned char)*s)) < 0)
			return -1;
	}
	return 0;
}

static bool port_shown(unsigned port)
{
	return port != 0 && port != 25;
}

int q_retry_key_host(struct q_buf *out, const char *host, const char *ip,
		     unsigned port, bool include_ip)
{
	bool bracket_host;

	assert(out != NULL && host != NULL);
	q_buf_reset(out);
	bracket_host = strchr(host, ':') != NULL;
	if (q_buf_adds(out, "T:") < 0 ||
	    (bracket_host && q_buf_addc(out, '[') < 0) ||
	    add_lower(out, host) < 0 ||
	    (bracket_host && q_buf_addc(out, ']') < 0))
		return -1;
	if (include_ip && ip != NULL && *ip != '\0') {
		bool v6 = strchr(ip, ':') != NULL;
		bool br = v6 && port_shown(port);

		if (q_buf_addc(out, ':') < 0 ||
		    (br && q_buf_addc(out, '[') < 0) ||
		    add_lower(out, ip) < 0 ||
		    (br && q_buf_addc(out, ']') < 0))
			return -1;
	}
	if (port_shown(port) && q_buf_printf(out, ":%u", port) < 0)
		return -1;
	return 0;
}

int q_retry_key_route(struct q_buf *out, const char *domain)
{
	assert(out != NULL && domain != NULL);
	q_buf_reset(out);
	if (q_buf_adds(out, "R:") < 0 || add_lower(out, domain) < 0)
		return -1;
	return 0;
}

int q_retry_key_addr(struct q_buf *out, const char *addr, const char *msgid)
{
	const char *at;

	assert(out != NULL && addr != NULL && msgid != NULL);
	q_buf_reset(out);
	at = strrchr(addr, '@');
	if (at == NULL) {
		if (q_buf_adds(out, addr) < 0)
			return -1;
	} else if (q_buf_add(out, addr, (size_t)(at - addr)) < 0 ||
		   add_lower(out, at) < 0) {
		return -1;
	}
	if (q_buf_addc(out, ':') < 0 || q_buf_adds(out, msgid) < 0)
		return -1;
	return 0;
}

/* ------------------------------------------------------------------ */
/* error kinds */

enum kbase {
	K_OTHER, K_ANY, K_REFUSED, K_TIMEOUT, K_LOST, K_TLS, K_AUTH,
	K_QUOTA, K_LOOKUP, K_MAIL4, K_RCPT4, K_DATA4
};

enum kcode { C_ANY, C_DECADE, C_EXACT };

struct kind {
	enum kbase base;
	bool connect;            /* timeout: a connect timeout */
	char cls;                /* refused/timeout: 'A', 'M' or 0 (any) */
	enum kcode cmode;        /* *_4xx */
	int cval;                /* decade (40..49) or code (400..499) */
};

static bool streq_ci(const char *a, const char *b)
{
	return strcasecmp(a, b) == 0;
}

/* Parse a kind name (rule or failure side). false: not a known name
 * (k->base is then K_OTHER). */
static bool kind_parse(const char *s, struct kind *k)
{
	static const struct { const char *n; enum kbase b; } plain[] = {
		{ "*", K_ANY }, { "lost_connection", K_LOST },
		{ "tls_required", K_TLS }, { "auth_failed", K_AUTH },
		{ "quota", K_QUOTA }, { "lookup", K_LOOKUP },
	};
	size_t i;

	memset(k, 0, sizeof(*k));
	k->base = K_OTHER;
	if (s == NULL)
		return false;
	for (i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
		if (streq_ci(s, plain[i].n)) {
			k->base = plain[i].b;
			return true;
		}
	}
	if (strncasecmp(s, "refused", 7) == 0) {
		const char *x = s + 7;

		if (*x == '\0' || (*x == '_' && (streq_ci(x + 1, "A") ||
						 streq_ci(x + 1, "MX")))) {
			k->base = K_REFUSED;
			if (*x == '_')
				k->cls = (char)toupper((unsigned char)x[1]);
			return true;
		}
		return false;
	}
	if (strncasecmp(s, "timeout", 7) == 0) {
		const char *x = s + 7;

		if (*x != '\0' && *x != '_')
			return false;
		if (*x == '_') {
			x++;
			if (strncasecmp(x, "connect", 7) == 0) {
				k->connect = true;
				x += 7;
				if (*x == '_')
					x++;
				else if (*x == '\0')
					x = NULL;   /* "timeout_connect" */
				else
					return false;
			}
			if (x != NULL) {    /* a class must follow */
				if (streq_ci(x, "A"))
					k->cls = 'A';
				else if (streq_ci(x, "MX"))
					k->cls = 'M';
				else
					return false;
			}
		}
		k->base = K_TIMEOUT;
		return true;
	}
	if (strlen(s) == 8 && s[4] == '_' && s[5] == '4' &&
	    (strncasecmp(s, "mail", 4) == 0 || strncasecmp(s, "rcpt", 4) == 0 ||
	     strncasecmp(s, "data", 4) == 0)) {
		char a = s[6], b = s[7];
		bool ax = a == 'x' || a == 'X', bx = b == 'x' || b == 'X';
		bool ad = a >= '0' && a <= '9', bd = b >= '0' && b <= '9';

		if (ax && bx) {
			k->cmode = C_ANY;
		} else if (ad && bx) {
			k->cmode = C_DECADE;
			k->cval = 40 + (a - '0');
		} else if (ad && bd) {
			k->cmode = C_EXACT;
			k->cval = 400 + (a - '0') * 10 + (b - '0');
		} else {
			return false;
		}
		switch (tolower((unsigned char)s[0])) {
		case 'm': k->base = K_MAIL4; break;
		case 'r': k->base = K_RCPT4; break;
		default:  k->base = K_DATA4; break;
		}
		return true;
	}
	return false;
}

bool q_retry_kind_valid(const char *rule_kind)
{
	struct kind k;

	return kind_parse(rule_kind, &k);
}

bool q_retry_kind_match(const char *rule_kind, const char *kind, int code)
{
	struct kind r, f;
	int fcode;

	if (rule_kind == NULL || strcmp(rule_kind, "*") == 0)
		return true;
	if (!kind_parse(rule_kind, &r))
		return false;
	if (!kind_parse(kind, &f) || f.base != r.base)
		return false;
	switch (r.base) {
	case K_REFUSED:
		return r.cls == 0 || r.cls == f.cls;
	case K_TIMEOUT:
		if (r.connect && !f.connect)
			return false;
		return r.cls == 0 || r.cls == f.cls;
	case K_MAIL4:
	case K_RCPT4:
	case K_DATA4:
		/* The failure's code: the precise form of its name when it
		 * has one, else the code argument when it is a 4xx. */
		if (f.cmode == C_EXACT)
			fcode = f.cval;
		else if (code >= 400 && code <= 499)
			fcode = code;
		else
			fcode = -1;
		switch (r.cmode) {
		case C_ANY:
			return true;
		case C_DECADE:
			return fcode >= 0 && fcode / 10 == r.cval;
		case C_EXACT:
			return fcode == r.cval;
		}
		return false;
	default:
		return true;
	}
}

/* ------------------------------------------------------------------ */
/* rules */

static const struct q_retry_algo default_algos[] = {
	{ 'F', 2 * 3600, 15 * 60, 0.0 },
	{ 'G', 16 * 3600, 3600, 1.5 },
	{ 'F', 4 * 86400, 6 * 3600, 0.0 },
};
static const struct q_retry_rule default_rule = {
	(char *)"*", (char *)"*", 3, (struct q_retry_algo *)default_algos,
};

const struct q_retry_rule *q_retry_default_rule(void)
{
	return &default_rule;
}

void q_retry_rule_clear(struct q_retry_rule *rule)
{
	if (rule == NULL)
		return;
	free(rule->pattern);
	free(rule->kind);
	free(rule->algo);
	memset(rule, 0, sizeof(*rule));
}

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/* Copy the token at p (up to ',', ';', blank or end) into tok; returns
 * the position after it, or NULL when the token is empty or too long. */
static const char *take_token(const char *p, char *tok, size_t size)
{
	size_t n = strcspn(p, ",; \t");

	if (n == 0 || n >= size)
		return NULL;
	memcpy(tok, p, n);
	tok[n] = '\0';
	return p + n;
}

/* A factor: digits [ '.' digits ], locale-independent. It counts to
 * 1/1000 (as Exim's), so it is kept as a whole number of thousandths,
 * rounded at the fourth decimal: 2.0912354 is 2.091 and prints back as
 * 2.091, the same value when read again (q_conf_print). */
static bool parse_factor(const char *s, double *f_r)
{
	long long th = 0;
	int ndig = 0, nfrac = 0;

	while (*s >= '0' && *s <= '9') {
		if (++ndig > 6)
			return false;
		th = th * 10 + (*s++ - '0');
	}
	if (ndig == 0)
		return false;
	th *= 1000;
	if (*s == '.') {
		long long scale = 100;

		s++;
		if (!(*s >= '0' && *s <= '9'))
			return false;
		for (; *s >= '0' && *s <= '9'; s++, nfrac++) {
			if (nfrac < 3) {
				th += (*s - '0') * scale;
				scale /= 10;
			} else if (nfrac == 3 && *s >= '5') {
				th++;
			}
		}
	}
	if (*s != '\0')
		return false;
	*f_r = (double)th / 1000.0;
	return true;
}

int q_retry_parse_algos(const char *s, struct q_retry_rule *rule,
			const char **error_r)
{
	struct q_retry_algo algo[MAX_ALGOS];
	size_t n = 0;
	const char *p;
	char tbuf[32];

	assert(s != NULL && rule != NULL);
	p = skip_ws(s);
	while (*p != '\0') {
		struct q_retry_algo *a;
		unsigned item = (unsigned)n + 1;
		char letter;
		long long v[3];
		size_t nv = 0, want;
		const char *what[3];

		if (n == MAX_ALGOS)
			return q_err(error_r, "more than %d algorithms", MAX_ALGOS);
		if (*p == ';')
			return q_err(error_r, "item %u: empty", item);
		letter = (char)toupper((unsigned char)*p);
		if (letter != 'F' && letter != 'G' && letter != 'H')
			return q_err(error_r, "item %u: unknown algorithm '%c' "
				     "(F, G or H expected)", item, *p);
		want = letter == 'F' ? 2 : 3;
		what[0] = "cutoff";
		what[1] = letter == 'F' ? "interval" : "first interval";
		what[2] = "factor";
		a = &algo[n];
		memset(a, 0, sizeof(*a));
		a->type = letter;
		p = skip_ws(p + 1);
		while (*p == ',') {
			const char *q;

			p = skip_ws(p + 1);
			if (nv == want)
				return q_err(error_r, "item %u: %c takes %zu "
					     "values (%c,cutoff,%s)", item, letter,
					     want, letter, letter == 'F' ?
					     "interval" : "start,factor");
			q = take_token(p, tbuf, sizeof(tbuf));
			if (q == NULL)
				return q_err(error_r, "item %u: missing or "
					     "overlong %s", item, what[nv]);
			if (nv == 2) {
				if (!parse_factor(tbuf, &a->factor))
					return q_err(error_r, "item %u: bad factor "
						     "\"%s\" (a number such as "
						     "1.5 expected)", item, tbuf);
			} else if (q_time_parse(tbuf, &v[nv]) < 0) {
				return q_err(error_r, "item %u: bad %s \"%s\" (a "
					     "time such as 15m, 2h or 4d "
					     "expected)", item, what[nv], tbuf);
			}
			nv++;
			p = skip_ws(q);
		}
		if (nv < want)
			return q_err(error_r, "item %u: %c needs %s (%c,cutoff,%s)",
				     item, letter, letter == 'F' ?
				     "a cutoff and an interval" : "a cutoff, a "
				     "first interval and a factor", letter,
				     letter == 'F' ? "interval" : "start,factor");
		if (*p != ';' && *p != '\0')
			return q_err(error_r, "item %u: unexpected \"%.20s\" "
				     "(';' expected)", item, p);
		a->cutoff = v[0];
		a->p1 = v[1];
		if (a->cutoff <= 0)
			return q_err(error_r, "item %u: the cutoff must be "
				     "greater than 0", item);
		if (a->p1 <= 0)
			return q_err(error_r, "item %u: the %s must be greater "
				     "than 0", item, what[1]);
		if (letter != 'F' && !(a->factor > 1.0))
			return q_err(error_r, "item %u: %c needs a factor "
				     "greater than 1", item, letter);
		if (n > 0 && a->cutoff <= algo[n - 1].cutoff) {
			char b1[16], b2[16];

			return q_err(error_r, "item %u: cutoff %s is not after "
				     "the previous cutoff %s", item,
				     q_time_format(a->cutoff, b1, sizeof(b1)),
				     q_time_format(algo[n - 1].cutoff, b2,
						   sizeof(b2)));
		}
		n++;
		if (*p == ';')
			p = skip_ws(p + 1);
	}
	if (n == 0) {
		rule->algo = NULL;
	} else {
		struct q_retry_algo *copy = malloc(n * sizeof(*copy));

		if (copy == NULL)
			return q_err(error_r, "out of memory");
		memcpy(copy, algo, n * sizeof(*copy));
		rule->algo = copy;
	}
	rule->nalgo = n;
	return 0;
}

long long q_retry_final_cutoff(const struct q_retry_rule *rule)
{
	if (rule == NULL || rule->nalgo == 0)
		return 0;
	return rule->algo[rule->nalgo - 1].cutoff;
}

/* Does a rule pattern match a subject (host, domain, or address)? */
static bool pat_match(const char *pattern, const char *subject)
{
	const char *sat, *pat;

	if (subject == NULL || *subject == '\0')
		return false;
	if (pattern == NULL || strcmp(pattern, "*") == 0)
		return true;
	sat = strrchr(subject, '@');
	pat = strchr(pattern, '@');
	if (pat == NULL)
		return q_pattern_match(pattern, sat != NULL ? sat + 1 : subject);
	if (pat == pattern + 1 && pattern[0] == '*')
		return q_pattern_match(pat + 1, sat != NULL ? sat + 1 : subject);
	return sat != NULL && q_pattern_match(pattern, subject);
}

const struct q_retry_rule *q_retry_find_rule(const struct q_retry_rule *rules,
					     size_t n, const char *host,
					     const char *domain, const char *kind,
					     int code)
{
	size_t i;

	for (i = 0; i < n; i++) {
		const struct q_retry_rule *r = &rules[i];

		if (!q_retry_kind_match(r->kind, kind, code))
			continue;
		if (pat_match(r->pattern, host) || pat_match(r->pattern, domain))
			return r;
	}
	return &default_rule;
}

/* ------------------------------------------------------------------ */
/* records */

void q_retry_rec_clear(struct q_retry_rec *r)
{
	if (r == NULL)
		return;
	free(r->text);
	memset(r, 0, sizeof(*r));
}

int q_retry_rec_encode(const struct q_retry_rec *r, struct q_buf *out)
{
	q_buf_reset(out);
	if (q_rec_put_u8(out, REC_VERSION) < 0 ||
	    q_rec_put_u64(out, (uint64_t)(int64_t)r->first_failed) < 0 ||
	    q_rec_put_u64(out, (uint64_t)(int64_t)r->last_try) < 0 ||
	    q_rec_put_u64(out, (uint64_t)(int64_t)r->next_try) < 0 ||
	    q_rec_put_u8(out, r->expired ? 1 : 0) < 0 ||
	    q_rec_put_u32(out, (uint32_t)r->err) < 0 ||
	    q_rec_put_u32(out, (uint32_t)r->code) < 0 ||
	    q_rec_put_str(out, r->kind) < 0 ||
	    q_rec_put_str(out, r->text) < 0)
		return -1;
	return 0;
}

int q_retry_rec_decode(const void *val, size_t len, struct q_retry_rec *r,
		       const char **error_r)
{
	struct q_rec_reader rd;
	struct q_retry_rec t;
	uint8_t ver, exp;
	char *kind;

	memset(&t, 0, sizeof(t));
	q_rec_reader_init(&rd, val, len);
	ver = q_rec_get_u8(&rd);
	if (rd.bad)
		return q_err(error_r, "retry record: empty");
	if (ver != REC_VERSION)
		return q_err(error_r, "retry record: unknown version %u "
			     "(this qkit knows %d)", (unsigned)ver, REC_VERSION);
	t.first_failed = (time_t)(int64_t)q_rec_get_u64(&rd);
	t.last_try = (time_t)(int64_t)q_rec_get_u64(&rd);
	t.next_try = (time_t)(int64_t)q_rec_get_u64(&rd);
	exp = q_rec_get_u8(&rd);
	t.err = (int)q_rec_get_u32(&rd);
	t.code = (int)q_rec_get_u32(&rd);
	if (rd.bad)
		return q_err(error_r, "retry record: truncated (%zu bytes)", len);
	if (exp > 1)
		return q_err(error_r, "retry record: bad expired flag %u",
			     (unsigned)exp);
	t.expired = exp == 1;
	kind = q_rec_get_str(&rd);
	if (kind == NULL)
		return q_err(error_r, "retry record: truncated kind");
	if (strlen(kind) >= sizeof(t.kind)) {
		free(kind);
		return q_err(error_r, "retry record: kind too long");
	}
	strcpy(t.kind, kind);
	free(kind);
	t.text = q_rec_get_str(&rd);
	if (t.text == NULL)
		return q_err(error_r, "retry record: truncated text");
	if (rd.left != 0) {
		free(t.text);
		return q_err(error_r, "retry record: %zu trailing bytes", rd.left);
	}
	if (t.text[0] == '\0') {
		free(t.text);
		t.text = NULL;
	}
	q_retry_rec_clear(r);
	*r = t;
	return 0;
}

/* Saturating arithmetic on times: the operands may come from a damaged
 * record, a rule with absurd times or a clock at the end of time_t, and
 * a sum or difference must never wrap (undefined behaviour, and a
 * next_try in the past). TIME_HI is the largest time_t (signed, 32 or
 * 64 bits). */
#define TIME_HI ((long long)(sizeof(time_t) >= sizeof(long long) ? \
			    LLONG_MAX : INT32_MAX))

static long long sat_add(long long a, long long b)
{
	if (b > 0 && a > LLONG_MAX - b)
		return LLONG_MAX;
	if (b < 0 && a < LLONG_MIN - b)
		return LLONG_MIN;
	return a + b;
}

static long long sat_sub(long long a, long long b)
{
	if (b < 0 && a > LLONG_MAX + b)
		return LLONG_MAX;
	if (b > 0 && a < LLONG_MIN + b)
		return LLONG_MIN;
	return a - b;
}

/* H's "random" number: FNV-1a (64 bits) over the key and the times of
 * the failure (first_failed, now), then the 64-bit finaliser of
 * MurmurHash3, so that every bit of the result depends on every input
 * byte (FNV-1a alone leaves the last bytes, the clock's, weakly mixed).
 * A pure function: the same key, record and clock give the same next
 * try, and hosts that failed together get different ones. */
static uint64_t h_hash(const char *key, long long first_failed, long long now)
{
	uint64_t h = 14695981039346656037ULL;
	const long long t[2] = { first_failed, now };
	size_t i;
	int j;

	for (; key != NULL && *key != '\0'; key++) {
		h ^= (unsigned char)*key;
		h *= 1099511628211ULL;
	}
	for (i = 0; i < 2; i++) {
		for (j = 0; j < 64; j += 8) {
			h ^= ((uint64_t)t[i] >> j) & 0xff;
			h *= 1099511628211ULL;
		}
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

void q_retry_compute(struct q_retry_rec *rec, const struct q_retry_rule *rule,
		     long long interval_max, time_t now)
{
	q_retry_compute_key(rec, rule, interval_max, NULL, now);
}

void q_retry_compute_key(struct q_retry_rec *rec, const struct q_retry_rule *rule,
			 long long interval_max, const char *key, time_t now)
{
	const struct q_retry_algo *a = NULL;
	long long failing, ival, next;
	size_t i;

	assert(rec != NULL);
	if (rule == NULL)
		rule = &default_rule;
	if (interval_max <= 0)
		interval_max = DEFAULT_INTERVAL_MAX;
	if (interval_max > Q_RETRY_INTERVAL_LIMIT)
		interval_max = Q_RETRY_INTERVAL_LIMIT;

	/* A damaged record can hold any times; ones that no real failure
	 * could have written (negative, or more than a year ahead of now;
	 * an interval is at most Q_RETRY_INTERVAL_LIMIT) start the record
	 * again instead of overflowing the arithmetic. */
	const long long year = 366LL * 86400;
	if ((long long)rec->first_failed < 0 || (long long)rec->last_try < 0 ||
	    (long long)rec->next_try < 0 ||
	    (long long)rec->first_failed > sat_add(now, year) ||
	    (long long)rec->last_try > sat_add(now, year) ||
	    (long long)rec->next_try > sat_add(now, 2 * year))
		rec->first_failed = 0;
	if (rec->first_failed == 0 ||
	    (rec->last_try != 0 &&
	     sat_sub(now, rec->last_try) > Q_RETRY_DATA_EXPIRE)) {
		rec->first_failed = now;
		rec->last_try = now;
		rec->next_try = now;
		rec->expired = false;
	}
	failing = sat_sub(now, rec->first_failed);
	for (i = 0; i < rule->nalgo; i++) {
		if (failing <= rule->algo[i].cutoff) {
			a = &rule->algo[i];
			break;
		}
	}
	if (a != NULL) {
		rec->expired = false;
	} else {
		rec->expired = true;
		if (rule->nalgo > 0)
			a = &rule->algo[rule->nalgo - 1];
	}

	if (a == NULL) {
		ival = 0;
	} else if (a->type == 'F') {
		ival = a->p1;
	} else {
		long long predicted = sat_sub(rec->next_try, rec->last_try);
		long long actual = sat_sub(now, rec->last_try);
		long long lastgap = predicted < actual ? predicted : actual;

		if (lastgap < a->p1) {
			ival = a->p1;
		} else {
			/* factor in thousandths, integer arithmetic (as Exim):
			 * 18225 * 1.5 is 27337, never 27336.99... */
			long long fm = (long long)(a->factor * 1000.0 + 0.5);

			if (fm > 0 && lastgap > LLONG_MAX / fm)
				ival = interval_max;   /* capped below anyway */
			else
				ival = lastgap * fm / 1000;
		}
	}
	if (ival > interval_max)
		ival = interval_max;
	if (a != NULL && a->type == 'H') {
		/* G's interval g (capped), then one in [max(g/2, p1), g];
		 * g itself when the cap put it below p1 */
		long long lo = ival / 2;
		long long floor1 = a->p1 < ival ? a->p1 : ival;
		uint64_t span;

		if (lo < floor1)
			lo = floor1;
		span = (uint64_t)(ival - lo) + 1;
		ival = lo + (long long)(h_hash(key, rec->first_failed, now) % span);
	}
	next = sat_add(now, ival);
	if (next > TIME_HI)
		next = TIME_HI;
	rec->last_try = now;
	rec->next_try = (time_t)next;
}

bool q_retry_due(const struct q_retry_rec *rec, time_t now)
{
	return rec == NULL || rec->next_try <= now;
}

enum q_retry_use q_retry_host_use(const struct q_retry_rec *rec,
				  const struct q_retry_rule *rule,
				  time_t arrival, time_t now)
{
	if (rec == NULL || rec->next_try <= now)
		return Q_RETRY_USE;
	if (rule == NULL)
		rule = &default_rule;
	/* Exim's "ultimate address timeout": a message older than the
	 * rule's final cutoff gets one attempt, so that it can bounce. */
	if (!rec->expired && arrival != 0 &&
	    (long long)now - (long long)arrival > q_retry_final_cutoff(rule))
		return Q_RETRY_USE;
	return rec->expired ? Q_RETRY_SKIP_EXPIRED : Q_RETRY_SKIP;
}

bool q_retry_try_after_cutoff(const struct q_retry_rec *rec, time_t arrival)
{
	return rec != NULL && rec->expired && rec->last_try < arrival;
}

/* ------------------------------------------------------------------ */
/* the retry database */

int q_retry_get(struct q_hints *h, const char *key, struct q_retry_rec *rec,
		const char **error_r)
{
	struct q_buf val = { 0 };
	const char *err;
	int ret;

	ret = q_hints_get(h, Q_DB_RETRY, key, strlen(key), &val, &err);
	if (ret == 0) {
		ret = q_retry_rec_decode(val.data, val.len, rec, &err);
		if (ret < 0)
			ret = q_err(error_r, "retry %s: %s", key, err);
	} else if (ret < 0) {
		ret = q_err(error_r, "%s", err);
	}
	q_buf_free(&val);
	return ret;
}

struct fail_ctx {
	const char *key;
	const struct q_retry_rule *rule;
	long long interval_max;
	const char *kind;
	int code, err;
	const char *text;
	time_t now;
	struct q_retry_rec rec;       /* the result of the last call */
	char error[256];              /* why fn aborted */
};

static int fail_fn(const void *old, size_t oldlen, struct q_buf *out, void *vctx)
{
	struct fail_ctx *c = vctx;
	const char *err;
	size_t tlen;

	/* Called again when the transaction is retried: start clean. */
	q_retry_rec_clear(&c->rec);
	c->error[0] = '\0';
	if (old != NULL && q_retry_rec_decode(old, oldlen, &c->rec, &err) < 0) {
		snprintf(c->error, sizeof(c->error), "retry %s: %s (not "
			 "overwritten)", c->key, err);
		return -1;
	}
	q_retry_compute_key(&c->rec, c->rule, c->interval_max, c->key, c->now);
	c->rec.err = c->err;
	c->rec.code = c->code;
	snprintf(c->rec.kind, sizeof(c->rec.kind), "%s",
		 c->kind != NULL ? c->kind : "");
	free(c->rec.text);
	c->rec.text = NULL;
	if (c->text != NULL) {
		tlen = strlen(c->text);
		if (tlen > Q_RETRY_TEXT_MAX)
			tlen = Q_RETRY_TEXT_MAX;
		c->rec.text = strndup(c->text, tlen);
		if (c->rec.text == NULL) {
			snprintf(c->error, sizeof(c->error), "out of memory");
			return -1;
		}
	}
	if (q_retry_rec_encode(&c->rec, out) < 0) {
		snprintf(c->error, sizeof(c->error), "out of memory");
		return -1;
	}
	return Q_HINTS_PUT;
}

int q_retry_fail(struct q_hints *h, const char *key,
		 const struct q_retry_rule *rule, long long interval_max,
		 const char *kind, int code, int err, const char *text,
		 time_t now, struct q_retry_rec *rec_r, const char **error_r)
{
	struct fail_ctx c;
	const char *herr = NULL;
	int ret;

	assert(h != NULL && key != NULL);
	memset(&c, 0, sizeof(c));
	c.key = key;
	c.rule = rule;
	c.interval_max = interval_max;
	c.kind = kind;
	c.code = code;
	c.err = err;
	c.text = text;
	c.now = now;
	ret = q_hints_update(h, Q_DB_RETRY, key, strlen(key), fail_fn, &c, &herr);
	if (ret < 0) {
		q_retry_rec_clear(&c.rec);
		if (c.error[0] != '\0')
			return q_err(error_r, "%s", c.error);
		return q_err(error_r, "retry %s: %s", key,
			     herr != NULL ? herr : "update failed");
	}
	if (rec_r != NULL) {
		q_retry_rec_clear(rec_r);
		*rec_r = c.rec;
	} else {
		q_retry_rec_clear(&c.rec);
	}
	return 0;
}

int q_retry_clear(struct q_hints *h, const char *key, const char **error_r)
{
	return q_hints_del(h, Q_DB_RETRY, key, strlen(key), error_r);
}
