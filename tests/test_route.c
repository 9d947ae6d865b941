/*
 * tests/test_route.c - routing (q_route.c): hosts_file parsing and cache,
 * route lines, literals, MX order and failure kinds.
 *
 * No test depends on the network: DNS answers come from a fake query
 * function (q_route_set_query) that builds real DNS packets, so the MX
 * parser is exercised on wire data; names not in hosts_file resolve
 * through a fake address function (q_route_set_addr), which records the
 * names it is asked, except two cases that use the real getaddrinfo on
 * "localhost" (implicit MX: whatever it gives, never this machine) and
 * on names under .invalid (answered without any lookup, RFC 6761).
 */
#include "config.h"
#include "q/route.h"
#include "q/conf.h"
#include "q/addr.h"
#include "q/util.h"
#include "tlib.h"

#include <CUnit/CUnit.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------ */
/* fake DNS: packets built here, parsed by q_route */

struct pkt {
	unsigned char b[16384];
	size_t n;
};

static void put8(struct pkt *p, unsigned v)
{
	p->b[p->n++] = (unsigned char)v;
}

static void put16(struct pkt *p, unsigned v)
{
	put8(p, (v >> 8) & 255);
	put8(p, v & 255);
}

static void put_name(struct pkt *p, const char *name)
{
	while (*name != '\0' && strcmp(name, ".") != 0) {
		size_t l = strcspn(name, ".");

		put8(p, (unsigned)l);
		memcpy(p->b + p->n, name, l);
		p->n += l;
		name += l;
		if (*name == '.')
			name++;
	}
	put8(p, 0);
}

/* rrs: "MX 10 a.example; CNAME x.example; MX 0 ." */
static void build_answer(struct pkt *p, const char *qname, const char *rrs)
{
	char *copy = strdup(rrs), *save = NULL, *item;
	size_t ancount_at;
	unsigned an = 0;

	p->n = 0;
	put16(p, 0x1234);        /* id */
	put16(p, 0x8180);        /* QR RD RA, NOERROR */
	put16(p, 1);
	ancount_at = p->n;
	put16(p, 0);
	put16(p, 0);
	put16(p, 0);
	put_name(p, qname);
	put16(p, ns_t_mx);
	put16(p, ns_c_in);
	for (item = strtok_r(copy, ";", &save); item != NULL;
	     item = strtok_r(NULL, ";", &save)) {
		char type[8], target[300];
		unsigned pref = 0;
		size_t rdlen_at, start;

		while (*item == ' ')
			item++;
		if (sscanf(item, "MX %u %299s", &pref, target) == 2) {
			put16(p, 0xC00C);
			put16(p, ns_t_mx);
		} else if (sscanf(item, "%7s %299s", type, target) == 2 &&
			   strcmp(type, "CNAME") == 0) {
			put16(p, 0xC00C);
			put16(p, ns_t_cname);
		} else {
			continue;
		}
		put16(p, ns_c_in);
		put16(p, 0);
		put16(p, 300);   /* ttl */
		rdlen_at = p->n;
		put16(p, 0);
		start = p->n;
		if (strncmp(item, "MX", 2) == 0)
			put16(p, pref);
		put_name(p, target);
		p->b[rdlen_at] = (unsigned char)((p->n - start) >> 8);
		p->b[rdlen_at + 1] = (unsigned char)((p->n - start) & 255);
		an++;
	}
	p->b[ancount_at] = (unsigned char)(an >> 8);
	p->b[ancount_at + 1] = (unsigned char)(an & 255);
	free(copy);
}

struct fq {
	const char *name;
	int herr;                /* != 0: fail with this h_errno */
	const char *rrs;         /* else: these records */
};

static const struct fq fqs[] = {
	{ "mx.test", 0, "MX 20 b.mx.test; MX 10 a.mx.test; MX 20 c.mx.test" },
	{ "nullmx.test", 0, "MX 0 ." },
	{ "mixnull.test", 0, "MX 0 .; MX 10 a.mx.test" },
	{ "servfail.test", TRY_AGAIN, NULL },
	{ "norecovery.test", NO_RECOVERY, NULL },
	{ "nodata.test", NO_DATA, NULL },
	{ "nodata-noaddr.test", NO_DATA, NULL },
	{ "localhost", NO_DATA, NULL },
	{ "mxip.test", 0, "MX 10 127.0.0.1" },
	{ "deadmx.test", 0, "MX 10 gone.invalid; MX 20 a.mx.test" },
	{ "alldead.test", 0, "MX 10 gone.invalid" },
	{ "tempmx.test", 0, "MX 10 t.tempfail.test; MX 20 a.mx.test" },
	{ "alltemp.test", 0, "MX 10 t.tempfail.test" },
	{ "cname.test", 0, "CNAME real.cname.test; MX 5 a.mx.test" },
	{ "dupmx.test", 0, "MX 30 a.mx.test; MX 10 a.mx.test; MX 20 b.mx.test" },
	{ "sharedip.test", 0, "MX 10 a.mx.test; MX 20 alias-a.mx.test" },
	{ "upper.test", 0, "MX 10 A.MX.Test" },
	{ "viamx.test", 0, "MX 10 a.mx.test" },
	{ "garbage.test", 0, NULL },
	{ "big.test", 0, NULL },
	/* parked domains: MX hosts on loopback / unspecified addresses */
	{ "loopmx.test", 0, "MX 10 parked.lo.test; MX 20 zero.lo.test" },
	{ "halfloop.test", 0, "MX 10 half.lo.test; MX 20 parked.lo.test" },
	{ "nodata-loop.test", NO_DATA, NULL },
};

static int nqueries;

static int fake_query(const char *name, int type, unsigned char *answer,
		      int anslen, int *herr_r)
{
	static struct pkt p;
	size_t i;

	nqueries++;
	if (type != ns_t_mx) {
		*herr_r = NO_RECOVERY;
		return -1;
	}
	for (i = 0; i < sizeof(fqs) / sizeof(fqs[0]); i++)
		if (strcasecmp(fqs[i].name, name) == 0)
			break;
	if (i == sizeof(fqs) / sizeof(fqs[0])) {
		*herr_r = HOST_NOT_FOUND;
		return -1;
	}
	if (fqs[i].herr != 0) {
		*herr_r = fqs[i].herr;
		return -1;
	}
	if (strcmp(name, "garbage.test") == 0) {
		memcpy(p.b, "\x12\x34\x81\x80\x00\x01\x00\x05garbage", 15);
		p.n = 15;
	} else if (strcmp(name, "big.test") == 0) {
		char rrs[8192];
		size_t o = 0;
		int k;

		/* 60 long names: more than the first 4096-byte buffer */
		for (k = 0; k < 60; k++)
			o += (size_t)snprintf(rrs + o, sizeof(rrs) - o,
				"MX %d h%02d.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.big.test;",
				(k * 7) % 11, k);
		build_answer(&p, name, rrs);
	} else {
		build_answer(&p, name, fqs[i].rrs);
	}
	memcpy(answer, p.b, p.n < (size_t)anslen ? p.n : (size_t)anslen);
	return (int)p.n;
}

/* the names fake_addr was asked, as passed (the last 16) */
static char asked[16][300];
static size_t nasked;

static bool was_asked(const char *name)
{
	for (size_t i = 0; i < nasked && i < 16; i++)
		if (strcmp(asked[i], name) == 0)
			return true;
	return false;
}

static int add_ip(char ***ips_r, size_t *n_r, const char *ip)
{
	char **v = realloc(*ips_r, (*n_r + 1) * sizeof(*v));

	if (v == NULL)
		return EAI_MEMORY;
	v[*n_r] = strdup(ip);
	*ips_r = v;
	(*n_r)++;
	return 0;
}

/* Names match with or without the trailing dot; addresses are from the
 * documentation ranges, except the *.lo.test ones (parked domains). */
static int fake_addr(const char *qname, char ***ips_r, size_t *n_r)
{
	char buf[64], name[300];
	size_t nl = strlen(qname);
	int k;

	snprintf(asked[nasked++ % 16], sizeof(asked[0]), "%s", qname);
	if (nl > 0 && qname[nl - 1] == '.')
		nl--;
	snprintf(name, sizeof(name), "%.*s", (int)nl, qname);
	if (strcmp(name, "t.tempfail.test") == 0)
		return EAI_AGAIN;
	if (strcmp(name, "parked.lo.test") == 0)
		return add_ip(ips_r, n_r, "127.0.0.1") ? EAI_MEMORY :
			add_ip(ips_r, n_r, "::1");
	if (strcmp(name, "zero.lo.test") == 0)
		return add_ip(ips_r, n_r, "0.0.0.0") ? EAI_MEMORY :
			add_ip(ips_r, n_r, "::");
	if (strcmp(name, "half.lo.test") == 0)
		return add_ip(ips_r, n_r, "0.0.0.0") ? EAI_MEMORY :
			add_ip(ips_r, n_r, "192.0.2.9") ? EAI_MEMORY :
			add_ip(ips_r, n_r, "::ffff:127.0.0.1");
	if (strcmp(name, "nodata-loop.test") == 0)
		return add_ip(ips_r, n_r, "127.0.0.2");
	if (strcmp(name, "nodata.test") == 0)
		snprintf(buf, sizeof(buf), "192.0.2.1");
	else if (sscanf(name, "h%d.", &k) == 1 && strstr(name, ".big.test") != NULL)
		snprintf(buf, sizeof(buf), "198.51.100.%d", k);
	else
		return EAI_NONAME;
	return add_ip(ips_r, n_r, buf);
}

/* ------------------------------------------------------------------ */
/* fixtures */

static const char hosts_text[] =
	"# test hosts file\n"
	"127.0.1.1 a.mx.test alias-a.mx.test\n"
	"127.0.1.2\tb.mx.test\n"
	"127.0.1.3 c.mx.test\n"
	"::1 c.mx.test\n"
	"127.0.0.2 mx1.test\n"
	"127.0.0.3   mx1.test   # second address\n"
	"0:0:0:0:0:0:0:1 mx1.test\n"
	"127.0.0.7 listed.example\n"
	"127.0.0.8 listed.example\n";

static char *hosts_path;

static struct q_hostspec hs_special[] = {
	{ (char *)"127.0.0.9", 2525, false }, { (char *)"mx1.test", 0, false } };
static struct q_hostspec hs_sub[] = { { (char *)"::1", 2526, false } };
static struct q_hostspec hs_dead[] = { { (char *)"nosuch.invalid", 0, false } };
static struct q_hostspec hs_mixed[] = {
	{ (char *)"nosuch.invalid", 0, false }, { (char *)"mx1.test", 0, false } };
static struct q_hostspec hs_dup[] = {
	{ (char *)"mx1.test", 0, false }, { (char *)"127.0.0.2", 0, false },
	{ (char *)"[127.0.0.3]", 0, false } };
static struct q_hostspec hs_v6[] = {
	{ (char *)"2001:DB8:0:0::1", 2527, false },
	{ (char *)"::ffff:127.0.0.1", 0, false } };
static struct q_hostspec hs_temp[] = { { (char *)"t.tempfail.test", 0, false } };
static struct q_hostspec hs_temppart[] = {
	{ (char *)"t.tempfail.test", 0, false }, { (char *)"mx1.test", 0, false } };
static struct q_hostspec hs_tempperm[] = {
	{ (char *)"nosuch.invalid", 0, false }, { (char *)"t.tempfail.test", 0, false } };
static struct q_hostspec hs_viamx[] = {
	{ (char *)"mx", 0, true }, { (char *)"127.0.0.50", 0, false } };
static struct q_hostspec hs_star[] = { { (char *)"mx1.test", 2600, false } };
static struct q_hostspec hs_loop[] = { { (char *)"parked.lo.test", 0, false } };

#define R(p, h) { (char *)(p), sizeof(h) / sizeof(h[0]), h }
static struct q_route routes[] = {
	R("special.test", hs_special),
	R("*.sub.test", hs_sub),
	R("dead.test", hs_dead),
	R("mixed.test", hs_mixed),
	R("dup.test", hs_dup),
	R("v6.test", hs_v6),
	R("temp.test", hs_temp),
	R("temppart.test", hs_temppart),
	R("tempperm.test", hs_tempperm),
	R("viamx.test", hs_viamx),
	R("*.routed", hs_star),
	R("looproute.test", hs_loop),
};

static void make_conf(struct q_conf *c, bool with_routes)
{
	memset(c, 0, sizeof(*c));
	c->port = 2500;
	c->hosts_file = hosts_path;
	if (with_routes) {
		c->routes = routes;
		c->nroutes = sizeof(routes) / sizeof(routes[0]);
	}
}

static int setup(void)
{
	char *dir = t_tmpdir();
	static char path[4096];

	if (dir == NULL)
		return 1;
	snprintf(path, sizeof(path), "%s/hosts", dir);
	if (t_write_file(path, hosts_text) != 0)
		return 1;
	hosts_path = path;
	q_route_set_query(fake_query);
	q_route_set_addr(fake_addr);
	return 0;
}

static int teardown(void)
{
	q_route_set_query(NULL);
	q_route_set_addr(NULL);
	q_route_cache_flush();
	return 0;
}

/* "name/ip:port/pref/M|A ..." */
static char *show(const struct q_hostlist_r *l)
{
	struct q_buf b = { 0 };
	size_t i;

	for (i = 0; i < l->n; i++)
		q_buf_printf(&b, "%s%s/%s:%u/%d/%c", i ? " " : "", l->h[i].name,
			     l->h[i].ip, l->h[i].port, l->h[i].mx_pref,
			     l->h[i].from_mx ? 'M' : 'A');
	if (b.data == NULL)
		q_buf_adds(&b, "");
	return b.data;
}

struct rcase {
	const char *domain;
	int ret;                 /* 0, Q_ROUTE_TEMPORARY, Q_ROUTE_PERMANENT */
	const char *want;        /* 0: show(); else a substring of the error */
	bool partial;
};

static void run_cases(const struct rcase *cs, size_t n, bool with_routes)
{
	struct q_conf conf;
	size_t i;

	make_conf(&conf, with_routes);
	for (i = 0; i < n; i++) {
		struct q_hostlist_r l;
		const char *err = NULL;
		int ret = q_route_domain(&conf, cs[i].domain, &l, &err);
		char *got = show(&l);
		bool ok;

		if (cs[i].ret == 0)
			ok = ret == 0 && strcmp(got, cs[i].want) == 0 &&
			     l.partial == cs[i].partial;
		else
			ok = ret == cs[i].ret && l.n == 0 && l.h == NULL &&
			     err != NULL && strstr(err, cs[i].want) != NULL;
		CU_ASSERT_TRUE(ok);
		if (!ok)
			fprintf(stderr, "\n  %s: ret %d \"%s\" partial %d err \"%s\""
				"\n   want %d \"%s\"\n", cs[i].domain, ret, got,
				l.partial, err ? err : "", cs[i].ret, cs[i].want);
		free(got);
		q_route_free(&l);
		CU_ASSERT_EQUAL(l.n, 0);
		CU_ASSERT_PTR_NULL(l.h);
	}
}

/* ------------------------------------------------------------------ */
/* hosts_file */

static void test_hosts_file_table(void)
{
	static const char text[] =
		"# comment line\n"
		"127.0.0.1 localhost\n"
		"127.0.0.2   mx1.test  mx1-alias.test   # trailing comment\n"
		"127.0.0.3\tmx1.test\n"
		"::1 mx1.test ip6.test\n"
		"fe80::1%lo link.test\n"
		"not-an-ip bad.test\n"
		"127.0.0.4\n"
		"  127.0.0.5 MixedCase.Test.\n"
		"127.0.0.2 mx1.test\n"
		"10.0.0.1 a.test#glued-comment\n"
		"127.0.0.9 crlf.test\r\n"
		"2001:DB8:0:0:0:0:0:7 long6.test\n"
		"#127.0.0.6 commented.test\n"
		"\n"
		"   \t\n"
		"127.0.0.10 last.test";     /* no final newline */
	static const struct {
		const char *name;
		const char *want;        /* NULL = not found */
	} cases[] = {
		{ "mx1.test", "127.0.0.2 127.0.0.3 ::1" },
		{ "MX1.TEST", "127.0.0.2 127.0.0.3 ::1" },
		{ "mx1.test.", "127.0.0.2 127.0.0.3 ::1" },
		{ "mx1-alias.test", "127.0.0.2" },
		{ "ip6.test", "::1" },
		{ "localhost", "127.0.0.1" },
		{ "mixedcase.test", "127.0.0.5" },
		{ "a.test", "10.0.0.1" },
		{ "crlf.test", "127.0.0.9" },
		{ "long6.test", "2001:db8::7" },
		{ "last.test", "127.0.0.10" },
		{ "link.test", NULL },
		{ "bad.test", NULL },
		{ "not-an-ip", NULL },
		{ "commented.test", NULL },
		{ "comment", NULL },
		{ "trailing", NULL },
		{ "127.0.0.4", NULL },
		{ "nosuch.test", NULL },
		{ "mx1", NULL },
	};
	char path[4096], *dir = t_tmpdir();
	size_t i, j;

	CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
	snprintf(path, sizeof(path), "%s/hosts-table", dir);
	CU_ASSERT_EQUAL_FATAL(t_write_file(path, text), 0);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char **ips = NULL;
		size_t n = 99;
		const char *err = NULL;
		struct q_buf b = { 0 };
		int ret = q_hosts_file_lookup(path, cases[i].name, &ips, &n, &err);

		for (j = 0; ret == 0 && j < n; j++)
			q_buf_printf(&b, "%s%s", j ? " " : "", ips[j]);
		if (cases[i].want == NULL) {
			CU_ASSERT_EQUAL(ret, Q_NOTFOUND);
			CU_ASSERT_EQUAL(n, 0);
			CU_ASSERT_PTR_NULL(ips);
		} else {
			CU_ASSERT_EQUAL(ret, 0);
			CU_ASSERT(b.data != NULL && strcmp(b.data, cases[i].want) == 0);
			if (b.data == NULL || strcmp(b.data, cases[i].want) != 0)
				fprintf(stderr, "\n  %s: got \"%s\" want \"%s\"\n",
					cases[i].name, b.data ? b.data : "",
					cases[i].want);
		}
		q_strv_free(&ips, ret == 0 ? n : 0);
		q_buf_free(&b);
	}
}

static void test_hosts_file_reload(void)
{
	char path[4096], *dir = t_tmpdir();
	char **ips = NULL;
	size_t n = 0;
	const char *err = NULL;

	CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
	snprintf(path, sizeof(path), "%s/hosts-reload", dir);
	CU_ASSERT_EQUAL(t_write_file(path, "127.0.0.1 one.test\n"), 0);
	CU_ASSERT_EQUAL(q_hosts_file_lookup(path, "one.test", &ips, &n, &err), 0);
	CU_ASSERT(n == 1 && strcmp(ips[0], "127.0.0.1") == 0);
	q_strv_free(&ips, n);
	/* a changed file is read again */
	CU_ASSERT_EQUAL(t_write_file(path, "127.0.0.2 one.test\n127.0.0.3 two.test\n"), 0);
	CU_ASSERT_EQUAL(q_hosts_file_lookup(path, "one.test", &ips, &n, &err), 0);
	CU_ASSERT(n == 1 && strcmp(ips[0], "127.0.0.2") == 0);
	q_strv_free(&ips, n);
	CU_ASSERT_EQUAL(q_hosts_file_lookup(path, "two.test", &ips, &n, &err), 0);
	q_strv_free(&ips, n);
	/* a missing file is an error naming it */
	CU_ASSERT_EQUAL(unlink(path), 0);
	err = NULL;
	CU_ASSERT_EQUAL(q_hosts_file_lookup(path, "one.test", &ips, &n, &err), -1);
	CU_ASSERT(err != NULL && strstr(err, path) != NULL);
	CU_ASSERT_PTR_NULL(ips);
	/* and a route through it fails locally (-1), not permanently */
	{
		struct q_conf conf;
		struct q_hostlist_r l;

		make_conf(&conf, true);
		conf.hosts_file = path;
		CU_ASSERT_EQUAL(q_route_domain(&conf, "special.test", &l, &err), -1);
		CU_ASSERT(err != NULL && strstr(err, path) != NULL);
		CU_ASSERT_EQUAL(l.n, 0);
	}
	q_route_cache_flush();
}

struct th_arg {
	int bad;
};

static void *th_lookup(void *v)
{
	struct th_arg *a = v;
	int i;

	for (i = 0; i < 2000; i++) {
		char **ips = NULL;
		size_t n = 0;
		const char *err;
		const char *name = (i & 1) ? "mx1.test" : "listed.example";

		if (q_hosts_file_lookup(hosts_path, name, &ips, &n, &err) != 0 ||
		    n != ((i & 1) ? 3u : 2u))
			a->bad++;
		q_strv_free(&ips, n);
	}
	return NULL;
}

static void test_hosts_file_threads(void)
{
	pthread_t t[4];
	struct th_arg a[4];
	int i;

	q_route_cache_flush();
	for (i = 0; i < 4; i++) {
		a[i].bad = 0;
		CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, th_lookup, &a[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		CU_ASSERT_EQUAL(a[i].bad, 0);
	}
}

/* ------------------------------------------------------------------ */
/* route lines */

#define MX1(port) "mx1.test/127.0.0.2:" #port "/-1/A mx1.test/127.0.0.3:" #port \
	"/-1/A mx1.test/::1:" #port "/-1/A"

static void test_route_lines(void)
{
	static const struct rcase cs[] = {
		{ "special.test", 0, "127.0.0.9/127.0.0.9:2525/-1/A " MX1(2500), false },
		{ "SPECIAL.Test.", 0, "127.0.0.9/127.0.0.9:2525/-1/A " MX1(2500), false },
		{ "a.sub.test", 0, "::1/::1:2526/-1/A", false },
		{ "deep.a.sub.test", 0, "::1/::1:2526/-1/A", false },
		{ "x.routed", 0, MX1(2600), false },
		{ "dup.test", 0, MX1(2500), false },
		{ "v6.test", 0, "2001:db8:0:0::1/2001:db8::1:2527/-1/A "
		  "::ffff:127.0.0.1/::ffff:127.0.0.1:2500/-1/A", false },
		{ "mixed.test", 0, MX1(2500), false },
		{ "viamx.test", 0, "a.mx.test/127.0.1.1:2500/10/M "
		  "127.0.0.50/127.0.0.50:2500/-1/A", false },
		{ "listed.example", 0, "listed.example/127.0.0.7:2500/-1/A "
		  "listed.example/127.0.0.8:2500/-1/A", false },
	};
	struct q_conf conf;
	struct q_hostlist_r l;
	const char *err;
	int before;

	run_cases(cs, sizeof(cs) / sizeof(cs[0]), true);

	/* a domain listed in hosts_file is routed without DNS */
	before = nqueries;
	make_conf(&conf, true);
	CU_ASSERT_EQUAL(q_route_domain(&conf, "listed.example", &l, &err), 0);
	CU_ASSERT_EQUAL(nqueries, before);
	CU_ASSERT_FALSE(l.by_mx);
	q_route_free(&l);
	/* a route with "mx" marks the list as routed by MX */
	CU_ASSERT_EQUAL(q_route_domain(&conf, "viamx.test", &l, &err), 0);
	CU_ASSERT_TRUE(l.by_mx);
	q_route_free(&l);
}

static void test_literals(void)
{
	static const struct rcase cs[] = {
		{ "[127.0.0.5]", 0, "[127.0.0.5]/127.0.0.5:2500/-1/A", false },
		{ "[IPv6:::1]", 0, "[ipv6:::1]/::1:2500/-1/A", false },
		{ "[IPv6:2001:DB8::0:1]", 0, "[ipv6:2001:db8::0:1]/2001:db8::1:2500/-1/A", false },
		{ "[::1]", Q_ROUTE_PERMANENT, "bad address literal", false },
		{ "[IPv6:127.0.0.1]", Q_ROUTE_PERMANENT, "bad address literal", false },
		{ "[300.0.0.1]", Q_ROUTE_PERMANENT, "bad address literal", false },
		{ "bad domain", Q_ROUTE_PERMANENT, "not a valid domain", false },
		{ "a..b", Q_ROUTE_PERMANENT, "not a valid domain", false },
		{ "", Q_ROUTE_PERMANENT, "not a valid domain", false },
	};

	run_cases(cs, sizeof(cs) / sizeof(cs[0]), false);
}

/* ------------------------------------------------------------------ */
/* failure kinds */

static void test_failures(void)
{
	static const struct rcase cs[] = {
		{ "dead.test", Q_ROUTE_PERMANENT, "nosuch.invalid: host not found", false },
		{ "temp.test", Q_ROUTE_TEMPORARY, "t.tempfail.test", false },
		{ "temppart.test", 0, MX1(2500), true },
		{ "tempperm.test", Q_ROUTE_TEMPORARY, "t.tempfail.test", false },
		{ "mixed.test", 0, MX1(2500), false },
	};
	struct q_conf conf;
	struct q_hostlist_r l;
	const char *err = NULL;
	int before;

	run_cases(cs, sizeof(cs) / sizeof(cs[0]), true);

	/* .invalid domains and hosts fail at once, with no lookup at all:
	 * the real resolver and getaddrinfo are in place for this */
	q_route_set_addr(NULL);
	before = nqueries;
	make_conf(&conf, true);
	CU_ASSERT_EQUAL(q_route_domain(&conf, "nosuch.invalid", &l, &err),
			Q_ROUTE_PERMANENT);
	CU_ASSERT(err != NULL && strstr(err, "nosuch.invalid") != NULL);
	CU_ASSERT_EQUAL(q_route_domain(&conf, "INVALID", &l, &err),
			Q_ROUTE_PERMANENT);
	CU_ASSERT_EQUAL(q_route_domain(&conf, "dead.test", &l, &err),
			Q_ROUTE_PERMANENT);
	CU_ASSERT_EQUAL(nqueries, before);
	q_route_set_addr(fake_addr);
}

/* The real getaddrinfo: "localhost" has no MX (fake answer), so its own
 * addresses would be used (implicit MX). A name from the DNS is looked up
 * as "localhost." (not in /etc/hosts, which glibc matches exactly), and
 * what the DNS may give for it (127.0.0.1, RFC 6761) is dropped: never
 * a route to this machine, whether this host has a network or not. */
static void test_implicit_localhost(void)
{
	struct q_conf conf;
	struct q_hostlist_r l;
	const char *err = NULL;
	int ret;

	q_route_set_addr(NULL);
	make_conf(&conf, false);
	conf.hosts_file = NULL;
	ret = q_route_domain(&conf, "localhost", &l, &err);
	CU_ASSERT(ret == Q_ROUTE_PERMANENT || ret == Q_ROUTE_TEMPORARY);
	CU_ASSERT_EQUAL(l.n, 0);
	CU_ASSERT(err != NULL && strstr(err, "localhost") != NULL);
	q_route_free(&l);
	q_route_set_addr(fake_addr);
}

/* Names from the DNS (MX targets, the domain as implicit MX) reach the
 * address lookup as absolute names; route-line names as written. */
static void test_absolute_names(void)
{
	struct q_conf conf;
	struct q_hostlist_r l;
	const char *err = NULL;

	make_conf(&conf, true);
	nasked = 0;
	CU_ASSERT_EQUAL(q_route_domain(&conf, "nodata.test", &l, &err), 0);
	q_route_free(&l);
	CU_ASSERT(was_asked("nodata.test."));
	CU_ASSERT_FALSE(was_asked("nodata.test"));
	nasked = 0;
	CU_ASSERT_EQUAL(q_route_domain(&conf, "halfloop.test", &l, &err), 0);
	/* the name in the result has no dot */
	CU_ASSERT(l.n == 1 && strcmp(l.h[0].name, "half.lo.test") == 0);
	q_route_free(&l);
	CU_ASSERT(was_asked("half.lo.test."));
	CU_ASSERT(was_asked("parked.lo.test."));
	CU_ASSERT_FALSE(was_asked("half.lo.test"));
	nasked = 0;
	CU_ASSERT_EQUAL(q_route_domain(&conf, "looproute.test", &l, &err), 0);
	q_route_free(&l);
	CU_ASSERT(was_asked("parked.lo.test"));
	CU_ASSERT_FALSE(was_asked("parked.lo.test."));
	/* hosts_file names are never asked (listed.example, a.mx.test) */
	nasked = 0;
	CU_ASSERT_EQUAL(q_route_domain(&conf, "viamx.test", &l, &err), 0);
	q_route_free(&l);
	CU_ASSERT_EQUAL(nasked, 0);
}

/* Addresses from the DNS on this machine (parked domains: 127.0.0.1,
 * 0.0.0.0, ::1, ::, IPv4-mapped) are dropped for MX and implicit-MX
 * names, a host left with none is a permanent failure; route lines,
 * hosts_file entries and literals are never filtered. */
static void test_loopback_dropped(void)
{
	static const struct rcase cs[] = {
		{ "loopmx.test", Q_ROUTE_PERMANENT, "MX host parked.lo.test "
		  "resolves only to loopback/unspecified addresses", false },
		{ "halfloop.test", 0, "half.lo.test/192.0.2.9:2500/10/M", false },
		{ "nodata-loop.test", Q_ROUTE_PERMANENT, "nodata-loop.test "
		  "resolves only to loopback/unspecified addresses", false },
		{ "looproute.test", 0, "parked.lo.test/127.0.0.1:2500/-1/A "
		  "parked.lo.test/::1:2500/-1/A", false },
		{ "listed.example", 0, "listed.example/127.0.0.7:2500/-1/A "
		  "listed.example/127.0.0.8:2500/-1/A", false },
		{ "viamx.test", 0, "a.mx.test/127.0.1.1:2500/10/M "
		  "127.0.0.50/127.0.0.50:2500/-1/A", false },
		{ "[127.0.0.1]", 0, "[127.0.0.1]/127.0.0.1:2500/-1/A", false },
		{ "[IPv6:::1]", 0, "[ipv6:::1]/::1:2500/-1/A", false },
	};

	run_cases(cs, sizeof(cs) / sizeof(cs[0]), true);
}

/* ------------------------------------------------------------------ */
/* MX */

static void test_mx_cases(void)
{
	static const struct rcase cs[] = {
		{ "nullmx.test", Q_ROUTE_PERMANENT, "null MX", false },
		{ "mixnull.test", 0, "a.mx.test/127.0.1.1:2500/10/M", false },
		{ "nx.test", Q_ROUTE_PERMANENT, "NXDOMAIN", false },
		{ "servfail.test", Q_ROUTE_TEMPORARY, "servfail.test: MX lookup", false },
		{ "norecovery.test", Q_ROUTE_TEMPORARY, "norecovery.test", false },
		{ "nodata.test", 0, "nodata.test/192.0.2.1:2500/-1/A", false },
		{ "nodata-noaddr.test", Q_ROUTE_PERMANENT,
		  "domain has no MX or address records", false },
		{ "mxip.test", Q_ROUTE_PERMANENT, "IP addresses", false },
		{ "deadmx.test", 0, "a.mx.test/127.0.1.1:2500/20/M", false },
		{ "alldead.test", Q_ROUTE_PERMANENT, "gone.invalid", false },
		{ "tempmx.test", 0, "a.mx.test/127.0.1.1:2500/20/M", true },
		{ "alltemp.test", Q_ROUTE_TEMPORARY, "t.tempfail.test", false },
		{ "cname.test", 0, "a.mx.test/127.0.1.1:2500/5/M", false },
		{ "dupmx.test", 0, "a.mx.test/127.0.1.1:2500/10/M "
		  "b.mx.test/127.0.1.2:2500/20/M", false },
		{ "sharedip.test", 0, "a.mx.test/127.0.1.1:2500/10/M", false },
		{ "upper.test", 0, "a.mx.test/127.0.1.1:2500/10/M", false },
		{ "garbage.test", Q_ROUTE_TEMPORARY, "malformed", false },
		{ "foo.invalid", Q_ROUTE_PERMANENT, "foo.invalid", false },
	};

	run_cases(cs, sizeof(cs) / sizeof(cs[0]), false);
}

static void test_mx_big_answer(void)
{
	struct q_conf conf;
	struct q_hostlist_r l;
	const char *err = NULL;
	size_t i;

	make_conf(&conf, false);
	CU_ASSERT_EQUAL_FATAL(q_route_domain(&conf, "big.test", &l, &err), 0);
	CU_ASSERT_EQUAL(l.n, 60);
	for (i = 1; i < l.n; i++)
		CU_ASSERT(l.h[i - 1].mx_pref <= l.h[i].mx_pref);
	CU_ASSERT_TRUE(l.by_mx);
	q_route_free(&l);
}

/* Preference order, equal preferences in random order, reproducible
 * with a seed. */
static void test_mx_order(void)
{
	struct q_conf conf;
	char *first = NULL;
	bool seen_bc = false, seen_cb = false;
	unsigned long seed;

	make_conf(&conf, false);
	for (seed = 1; seed <= 200; seed++) {
		struct q_hostlist_r l;
		const char *err = NULL;
		char *s;

		q_route_seed(seed);
		CU_ASSERT_EQUAL_FATAL(q_route_domain(&conf, "mx.test", &l, &err), 0);
		s = show(&l);
		CU_ASSERT_EQUAL(l.n, 4);
		CU_ASSERT(strncmp(s, "a.mx.test/127.0.1.1:2500/10/M ", 30) == 0);
		if (strcmp(s + 30, "b.mx.test/127.0.1.2:2500/20/M "
			   "c.mx.test/127.0.1.3:2500/20/M c.mx.test/::1:2500/20/M") == 0)
			seen_bc = true;
		else if (strcmp(s + 30, "c.mx.test/127.0.1.3:2500/20/M "
				"c.mx.test/::1:2500/20/M b.mx.test/127.0.1.2:2500/20/M") == 0)
			seen_cb = true;
		else
			CU_FAIL("unexpected MX order");
		if (seed == 7)
			first = strdup(s);
		free(s);
		q_route_free(&l);
	}
	CU_ASSERT_TRUE(seen_bc);
	CU_ASSERT_TRUE(seen_cb);
	/* the same seed gives the same order */
	{
		struct q_hostlist_r l;
		const char *err;
		char *s;

		q_route_seed(7);
		CU_ASSERT_EQUAL(q_route_domain(&conf, "mx.test", &l, &err), 0);
		s = show(&l);
		CU_ASSERT(first != NULL && strcmp(s, first) == 0);
		free(s);
		q_route_free(&l);
	}
	free(first);
}

/* ------------------------------------------------------------------ */
/* fallback hosts */

static void test_fallback(void)
{
	struct q_hostspec fb[] = {
		{ (char *)"b.mx.test", 2600, false },
		{ (char *)"127.0.0.60", 0, false },
		{ (char *)"nosuch.invalid", 0, false },
	};
	struct q_hostspec fbmx[] = { { (char *)"mx", 0, true } };
	struct q_conf conf;
	struct q_hostlist_r l;
	const char *err = NULL;
	char *s;

	make_conf(&conf, false);
	CU_ASSERT_EQUAL(q_route_fallback(&conf, "x.test", &l, &err),
			Q_ROUTE_PERMANENT);
	CU_ASSERT(err != NULL && strstr(err, "fallback") != NULL);

	conf.fallback_hosts = fb;
	conf.nfallback = 3;
	CU_ASSERT_EQUAL_FATAL(q_route_fallback(&conf, "x.test", &l, &err), 0);
	s = show(&l);
	CU_ASSERT_STRING_EQUAL(s, "b.mx.test/127.0.1.2:2600/-1/A "
			       "127.0.0.60/127.0.0.60:2500/-1/A");
	free(s);
	q_route_free(&l);

	/* "mx" among fallback hosts: the domain's MX hosts */
	conf.fallback_hosts = fbmx;
	conf.nfallback = 1;
	CU_ASSERT_EQUAL_FATAL(q_route_fallback(&conf, "viamx.test", &l, &err), 0);
	s = show(&l);
	CU_ASSERT_STRING_EQUAL(s, "a.mx.test/127.0.1.1:2500/10/M");
	free(s);
	q_route_free(&l);
	CU_ASSERT_EQUAL(q_route_fallback(&conf, NULL, &l, &err), Q_ROUTE_PERMANENT);
}

void suite_route(void)
{
	CU_pSuite s = CU_add_suite("route", setup, teardown);

	CU_add_test(s, "hosts_file: parsing table", test_hosts_file_table);
	CU_add_test(s, "hosts_file: reload and missing file", test_hosts_file_reload);
	CU_add_test(s, "hosts_file: lookups from 4 threads", test_hosts_file_threads);
	CU_add_test(s, "route lines: order, ports, dedup", test_route_lines);
	CU_add_test(s, "address literals and bad domains", test_literals);
	CU_add_test(s, "failure kinds: temporary vs permanent", test_failures);
	CU_add_test(s, "implicit MX with the real getaddrinfo (localhost)",
		    test_implicit_localhost);
	CU_add_test(s, "names from DNS looked up as absolute names",
		    test_absolute_names);
	CU_add_test(s, "MX/implicit MX addresses on loopback dropped",
		    test_loopback_dropped);
	CU_add_test(s, "MX: null, NXDOMAIN, SERVFAIL, implicit, CNAME, dups",
		    test_mx_cases);
	CU_add_test(s, "MX: answer larger than the first buffer", test_mx_big_answer);
	CU_add_test(s, "MX: preference order, random ties, seed", test_mx_order);
	CU_add_test(s, "fallback hosts", test_fallback);
}
