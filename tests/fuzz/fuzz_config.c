/*
 * tests/fuzz/fuzz_config.c - the configuration parser (q_conf_load in
 * libq/q_conf.c) and its printer.
 *
 * Input: a qkit.conf. q_conf_load has no in-memory entry, so the input
 * is written to a file on tmpfs (fz_tmpdir) and loaded. Checked:
 *  - never a crash or a leak; an error is "FILE:LINE: what" with a line
 *    number between 1 and the number of lines of the input (+1);
 *  - a loaded config is complete: the values the rest of qkit relies on
 *    (timeouts within their minimum, retry_interval_max within
 *    Q_RETRY_INTERVAL_LIMIT, non-empty spool directory, every
 *    route with hosts, every retry rule with a pattern, a kind that
 *    q_retry_kind_valid accepts and increasing cutoffs);
 *  - q_conf_print's output loads again, and printing that gives the same
 *    text (the header of q_conf.c promises the round trip);
 *  - q_conf_route and q_hostlist_match run over the loaded lists;
 *  - integer options: for a line "NAME = [-]DIGITS[K|M]" (whole line,
 *    no quotes or continuation) of an integer option, the value loaded
 *    is the number written (computed here in 128 bits), or the load
 *    fails when it does not fit.
 *    (This check found q_conf.c's parse_uint wrapping a 20-digit number
 *    modulo 2^64, fixed in c019def; regress/config/uint-wraps-2pow64.)
 */
#include "config.h"
#include "q/conf.h"
#include "q/retry.h"
#include "fuzz.h"

#include <ctype.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

static char path[PATH_MAX];
static int dirfd_ = -1;

static const struct {
	const char *name;
	size_t off;
	bool is_ll;             /* long long (else unsigned) */
} int_opts[] = {
	{ "port", offsetof(struct q_conf, port), false },
	{ "hosts_max_try", offsetof(struct q_conf, hosts_max_try), false },
	{ "max_rcpt", offsetof(struct q_conf, max_rcpt), false },
	{ "batch_max", offsetof(struct q_conf, batch_max), false },
	{ "serialize_max", offsetof(struct q_conf, serialize_max), false },
	{ "remote_max_parallel", offsetof(struct q_conf, remote_max_parallel), false },
	{ "queue_run_max", offsetof(struct q_conf, queue_run_max), false },
	{ "size_addition", offsetof(struct q_conf, size_addition), true },
};

/* Check one physical line "NAME = [-]DIGITS[KkMm]" (p[0..n)) of an
 * integer option against the loaded config. */
static void int_line(const char *p, size_t n, const struct q_conf *c)
{
	size_t i = 0, nlen, ndig = 0, sig = 0;   /* sig: without leading 0s */
	const char *name;
	unsigned __int128 v = 0;
	bool neg = false, huge = false;
	unsigned mult = 1;

	while (n > 0 && (p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	name = p + i;
	while (i < n && (isalnum((unsigned char)p[i]) || p[i] == '_'))
		i++;
	nlen = (size_t)(p + i - name);
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	if (i >= n || p[i] != '=')
		return;
	i++;
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	if (i < n && p[i] == '-') {
		neg = true;
		i++;
	}
	for (; i < n && p[i] >= '0' && p[i] <= '9'; i++, ndig++) {
		if (sig > 0 || p[i] != '0')
			sig++;
		v = v * 10 + (unsigned)(p[i] - '0');
		if (v > (unsigned __int128)1 << 100)
			huge = true, v = (unsigned __int128)1 << 100;
	}
	if (ndig == 0)
		return;
	if (i < n && (p[i] == 'K' || p[i] == 'k'))
		mult = 1024, i++;
	else if (i < n && (p[i] == 'M' || p[i] == 'm'))
		mult = 1024 * 1024, i++;
	if (i != n)
		return;
	for (size_t k = 0; k < sizeof(int_opts) / sizeof(int_opts[0]); k++) {
		const char *o = int_opts[k].name;

		if (strlen(o) != nlen || memcmp(o, name, nlen) != 0)
			continue;
		v *= mult;
		FZ_CHECK(!huge && v <= (unsigned __int128)LLONG_MAX,
			 "%.*s loaded, although its value is beyond LLONG_MAX",
			 (int)n, p);
		if (int_opts[k].is_ll) {
			long long want = neg ? -(long long)v : (long long)v;
			long long got = *(const long long *)(const void *)
				((const char *)c + int_opts[k].off);

			FZ_CHECK(got == want, "\"%.*s\" loaded as %lld", (int)n, p,
				 got);
		} else {
			unsigned got = *(const unsigned *)(const void *)
				((const char *)c + int_opts[k].off);

			FZ_CHECK(!neg || v == 0, "\"%.*s\" loaded (negative)",
				 (int)n, p);
			FZ_CHECK((unsigned __int128)got == v, "\"%.*s\" loaded as %u",
				 (int)n, p, got);
		}
		return;
	}
}

/* int_line for every physical line that is not part of a continued one. */
static void int_lines(const uint8_t *d, size_t n, const struct q_conf *c)
{
	size_t pos = 0;
	bool prev_cont = false;

	while (pos < n) {
		const uint8_t *nl = memchr(d + pos, '\n', n - pos);
		size_t end = nl != NULL ? (size_t)(nl - d) : n, len = end - pos;
		bool cont;

		while (len > 0 && (d[pos + len - 1] == '\r'))
			len--;
		cont = len > 0 && d[pos + len - 1] == '\\';
		if (!prev_cont && !cont && memchr(d + pos, '\0', end - pos) == NULL)
			int_line((const char *)d + pos, end - pos, c);
		prev_cont = cont;
		pos = end + 1;
	}
}

static char *print_conf(const struct q_conf *c, size_t *len_r)
{
	char *text = NULL;
	FILE *f = open_memstream(&text, len_r);

	if (f == NULL)
		fz_harness_fail("open_memstream failed");
	q_conf_print(c, f);
	if (fclose(f) != 0)
		fz_harness_fail("fclose of a memstream failed");
	return text;
}

static void check_conf(const struct q_conf *c)
{
	const struct q_hostlist *lists[] = {
		&c->serialize_hosts, &c->hosts_require_tls, &c->hosts_avoid_tls,
		&c->tls_verify_hosts,
	};
	static const char *const names[][2] = {
		{ "mx.example.com", "192.0.2.1" }, { "a.b", "2001:db8::1" },
		{ NULL, "127.0.0.1" }, { "localhost", NULL },
	};
	static const char *const domains[] = {
		"example.com", "sub.example.com", "EXAMPLE.NET", "x", "[192.0.2.1]",
	};

	FZ_CHECK(c->spool_directory != NULL && c->spool_directory[0] != '\0',
		 "no spool directory");
	FZ_CHECK(c->primary_hostname != NULL, "no primary_hostname");
	FZ_CHECK(c->port >= 1 && c->port <= 65535, "port %u", c->port);
	FZ_CHECK(c->connect_timeout >= 0 && c->command_timeout >= 1 &&
		 c->data_timeout >= 1 && c->final_timeout >= 1 &&
		 c->retry_interval_max >= 1, "a timeout below its minimum");
	FZ_CHECK(c->retry_interval_max <= Q_RETRY_INTERVAL_LIMIT,
		 "retry_interval_max %lld beyond its limit",
		 c->retry_interval_max);
	FZ_CHECK(c->hosts_max_try >= 1 && c->max_rcpt >= 1 &&
		 c->serialize_max >= 1 && c->remote_max_parallel >= 1,
		 "a count below its minimum");
	FZ_CHECK(c->nfallback == 0 || c->fallback_hosts != NULL, "fallback");
	FZ_CHECK(c->tls_privatekey == NULL || c->tls_certificate != NULL,
		 "tls_privatekey without tls_certificate");
	for (size_t i = 0; i < c->nfallback; i++)
		FZ_CHECK(c->fallback_hosts[i].name != NULL &&
			 c->fallback_hosts[i].port <= 65535, "fallback host %zu", i);
	for (size_t i = 0; i < c->nroutes; i++) {
		const struct q_route *r = &c->routes[i];

		FZ_CHECK(r->pattern != NULL && r->nhosts >= 1 && r->hosts != NULL,
			 "route %zu incomplete", i);
		for (size_t j = 0; j < r->nhosts; j++)
			FZ_CHECK(r->hosts[j].name != NULL &&
				 r->hosts[j].port <= 65535, "route %zu host %zu",
				 i, j);
	}
	for (size_t i = 0; i < c->nretry; i++) {
		const struct q_retry_rule *r = &c->retry[i];

		FZ_CHECK(r->pattern != NULL && r->kind != NULL,
			 "retry rule %zu incomplete", i);
		FZ_CHECK(strcmp(r->kind, "*") == 0 || q_retry_kind_valid(r->kind),
			 "retry rule %zu has kind \"%s\", which is not valid", i,
			 r->kind);
		for (size_t j = 0; j < r->nalgo; j++) {
			const struct q_retry_algo *a = &r->algo[j];

			FZ_CHECK((a->type == 'F' || a->type == 'G' ||
				  a->type == 'H') &&
				 a->cutoff > 0 && a->p1 > 0 &&
				 (a->type == 'F' || a->factor > 1.0) &&
				 (j == 0 || a->cutoff > r->algo[j - 1].cutoff),
				 "retry rule %zu algorithm %zu", i, j);
		}
	}
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
		for (size_t j = 0; j < sizeof(names) / sizeof(names[0]); j++)
			(void)q_hostlist_match(lists[i], names[j][0], names[j][1]);
	for (size_t i = 0; i < sizeof(domains) / sizeof(domains[0]); i++) {
		const struct q_route *r = q_conf_route(c, domains[i]);

		FZ_CHECK(r == NULL || (r >= c->routes && r < c->routes + c->nroutes),
			 "q_conf_route returned a route not in the list");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct q_conf *c = NULL, *c2 = NULL;
	const char *err = NULL;
	char *t1, *t2;
	size_t n1, n2, lines = 1;

	if (dirfd_ < 0) {
		snprintf(path, sizeof(path), "%s/qkit.conf", fz_tmpdir());
		dirfd_ = open(fz_tmpdir(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dirfd_ < 0)
			fz_harness_fail("open %s", fz_tmpdir());
	}
	fz_write_at(dirfd_, "qkit.conf", data, size);
	if (q_conf_load(path, &c, &err) < 0) {
		size_t plen = strlen(path);
		unsigned long line;
		char *end;

		FZ_CHECK(c == NULL, "a config returned with an error");
		FZ_CHECK(err != NULL && strncmp(err, path, plen) == 0 &&
			 err[plen] == ':', "error does not name the file: %s", err);
		for (size_t i = 0; i < size; i++)
			if (data[i] == '\n')
				lines++;
		/* "FILE: what" (I/O, size) or "FILE:LINE: what" */
		if (err[plen + 1] != ' ') {
			line = strtoul(err + plen + 1, &end, 10);
			FZ_CHECK(*end == ':' && line >= 1 && line <= lines,
				 "error names line %lu of %zu: %s", line, lines, err);
		}
		return 0;
	}
	FZ_CHECK(c != NULL, "no config and no error");
	check_conf(c);
	int_lines(data, size, c);
	t1 = print_conf(c, &n1);
	fz_write_at(dirfd_, "qkit.conf", t1, n1);
	FZ_CHECK(q_conf_load(path, &c2, &err) == 0, "the printed config does "
		 "not load: %s\n--- printed:\n%s", err, t1);
	check_conf(c2);
	t2 = print_conf(c2, &n2);
	FZ_CHECK(n1 == n2 && memcmp(t1, t2, n1) == 0, "print, load, print "
		 "differs:\n--- first:\n%s\n--- second:\n%s", t1, t2);
	free(t1);
	free(t2);
	q_conf_free(&c);
	q_conf_free(&c2);
	return 0;
}
