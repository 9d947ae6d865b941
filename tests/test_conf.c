/*
 * tests/test_conf.c - q_conf: defaults, every option, every error kind
 * with its "FILE:LINE: ..." text, routes (IPv6, ports, mx), retry lines,
 * the print/load round trip, host lists with CIDR, domain patterns and
 * the choice of file. Table-driven.
 */
#include "config.h"
#include "q/conf.h"
#include "tests/tlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

static char conf_path[4096];

/* Write text (len bytes; 0 = strlen) to the test's qkit.conf. */
static const char *write_conf(const char *text, size_t len)
{
	FILE *f;

	if (conf_path[0] == '\0') {
		char *dir = t_tmpdir();

		if (dir == NULL)
			return NULL;
		snprintf(conf_path, sizeof(conf_path), "%s/qkit.conf", dir);
	}
	f = fopen(conf_path, "w");
	if (f == NULL)
		return NULL;
	fwrite(text, 1, len ? len : strlen(text), f);
	fclose(f);
	return conf_path;
}

static struct q_conf *load_text(const char *text, const char **err_r)
{
	struct q_conf *c = NULL;
	const char *path = write_conf(text, 0);

	CU_ASSERT_PTR_NOT_NULL_FATAL(path);
	if (q_conf_load(path, &c, err_r) < 0) {
		CU_ASSERT_PTR_NULL(c);
		return NULL;
	}
	return c;
}

/* The printed configuration, malloc'd (through a temporary file: simple,
 * and no aliasing games with open_memstream). */
static char *print_conf(const struct q_conf *c)
{
	FILE *f = tmpfile();
	char *mem;
	long len;

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	q_conf_print(c, f);
	len = ftell(f);
	rewind(f);
	mem = malloc((size_t)len + 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(mem);
	CU_ASSERT_EQUAL(fread(mem, 1, (size_t)len, f), (size_t)len);
	mem[len] = '\0';
	fclose(f);
	return mem;
}

/* ---- defaults ---- */

static void test_defaults(void)
{
	struct q_conf *c = NULL;
	const char *err = NULL;
	char host[256];

	CU_ASSERT_EQUAL_FATAL(q_conf_load(NULL, &c, &err), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	CU_ASSERT_PTR_NULL(c->path);
	CU_ASSERT_STRING_EQUAL(c->spool_directory, LOCALSTATEDIR "/spool/qkit");
	CU_ASSERT_PTR_NULL(c->hosts_file);
	CU_ASSERT_EQUAL(gethostname(host, sizeof(host)), 0);
	CU_ASSERT_STRING_EQUAL(c->primary_hostname, host);
	CU_ASSERT_EQUAL(c->port, 25);
	CU_ASSERT_EQUAL(c->hosts_max_try, 5);
	CU_ASSERT_EQUAL(c->max_rcpt, 100);
	CU_ASSERT_EQUAL(c->batch_max, 500);
	CU_ASSERT_EQUAL(c->connect_timeout, 300);
	CU_ASSERT_EQUAL(c->command_timeout, 300);
	CU_ASSERT_EQUAL(c->data_timeout, 300);
	CU_ASSERT_EQUAL(c->final_timeout, 600);
	CU_ASSERT_EQUAL(c->nfallback, 0);
	CU_ASSERT_EQUAL(c->serialize_hosts.n, 0);
	CU_ASSERT_EQUAL(c->serialize_max, 1);
	CU_ASSERT_TRUE(c->retry_include_ip_address);
	CU_ASSERT_EQUAL(c->hosts_require_tls.n, 0);
	CU_ASSERT_EQUAL(c->hosts_avoid_tls.n, 0);
	CU_ASSERT_EQUAL(c->tls_verify_hosts.n, 0);
	CU_ASSERT_PTR_NULL(c->tls_verify_certificates);
	CU_ASSERT_PTR_NULL(c->tls_certificate);
	CU_ASSERT_PTR_NULL(c->tls_privatekey);
	CU_ASSERT_EQUAL(c->size_addition, 1024);
	CU_ASSERT_TRUE(c->delay_after_cutoff);
	CU_ASSERT_TRUE(c->keepalive);
	CU_ASSERT_PTR_NULL(c->interface);
	CU_ASSERT_EQUAL(c->remote_max_parallel, 2);
	CU_ASSERT_EQUAL(c->queue_run_max, 5);
	CU_ASSERT_EQUAL(c->retry_interval_max, 86400);
	CU_ASSERT_EQUAL(c->nroutes, 0);
	CU_ASSERT_EQUAL(c->nretry, 0);
	CU_ASSERT_PTR_NULL(q_conf_route(c, "example.com"));
	q_conf_free(&c);
	CU_ASSERT_PTR_NULL(c);
	q_conf_free(&c);

	/* an empty file, or only comments: the defaults too */
	c = load_text("# nothing here\n\n   \n\t# indented comment\n", &err);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	CU_ASSERT_STRING_EQUAL(c->path, conf_path);
	CU_ASSERT_EQUAL(c->port, 25);
	q_conf_free(&c);
}

/* ---- every option set ---- */

static const char full_conf[] =
	"# every option\n"
	"spool_directory = /var/tmp/q spool\n"
	"hosts_file = ./hosts\n"
	"primary_hostname = mx1.example.org\n"
	"port = 2525\n"
	"hosts_max_try = 3\n"
	"max_rcpt = 50\n"
	"batch_max = 0\n"
	"connect_timeout = 30s\n"
	"command_timeout = 1m30s\n"
	"data_timeout = 2h\n"
	"final_timeout = 1d\n"
	"fallback_hosts = relay1.example, [::1]:2526 127.0.0.2:26\n"
	"serialize_hosts = !10.1.2.3, 10.0.0.0/8\n"
	"serialize_max = 2\n"
	"retry_include_ip_address = no\n"
	"hosts_require_tls = *.secure.example\n"
	"hosts_avoid_tls = 192.0.2.0/24, broken.example\n"
	"tls_verify_hosts = *\n"
	"tls_verify_certificates = system\n"
	"tls_certificate = \"/etc/qkit/client cert.pem\"\n"
	"tls_privatekey = /etc/qkit/key.pem\n"
	"size_addition = -1\n"
	"delay_after_cutoff = 0\n"
	"keepalive = off\n"
	"interface = [2001:db8::25]\n"
	"remote_max_parallel = 8\n"
	"queue_run_max = 0\n"
	"retry_interval_max = 12h\n"
	"route example.com = [::1]:2525, [2001:db8::5] 127.0.0.1:26 relay.example mx mx:587\n"
	"route *.example.net = smarthost.example:submission\n"
	"route * = mx\n"
	"retry *.example.com * F,1h,5m; G,16h,1h,1.5; F,4d,6h\n"
	"retry * refused F,2h,10m\n";

static void test_full(void)
{
	const char *err = NULL;
	struct q_conf *c = load_text(full_conf, &err);
	const struct q_route *r;

	if (c == NULL)
		fprintf(stderr, "\n  %s\n", err);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	CU_ASSERT_STRING_EQUAL(c->spool_directory, "/var/tmp/q spool");
	CU_ASSERT_STRING_EQUAL(c->hosts_file, "./hosts");
	CU_ASSERT_STRING_EQUAL(c->primary_hostname, "mx1.example.org");
	CU_ASSERT_EQUAL(c->port, 2525);
	CU_ASSERT_EQUAL(c->hosts_max_try, 3);
	CU_ASSERT_EQUAL(c->max_rcpt, 50);
	CU_ASSERT_EQUAL(c->batch_max, 0);
	CU_ASSERT_EQUAL(c->connect_timeout, 30);
	CU_ASSERT_EQUAL(c->command_timeout, 90);
	CU_ASSERT_EQUAL(c->data_timeout, 7200);
	CU_ASSERT_EQUAL(c->final_timeout, 86400);
	CU_ASSERT_EQUAL_FATAL(c->nfallback, 3);
	CU_ASSERT_STRING_EQUAL(c->fallback_hosts[0].name, "relay1.example");
	CU_ASSERT_EQUAL(c->fallback_hosts[0].port, 0);
	CU_ASSERT_STRING_EQUAL(c->fallback_hosts[1].name, "::1");
	CU_ASSERT_EQUAL(c->fallback_hosts[1].port, 2526);
	CU_ASSERT_STRING_EQUAL(c->fallback_hosts[2].name, "127.0.0.2");
	CU_ASSERT_EQUAL(c->fallback_hosts[2].port, 26);
	CU_ASSERT_EQUAL_FATAL(c->serialize_hosts.n, 2);
	CU_ASSERT_STRING_EQUAL(c->serialize_hosts.items[0], "!10.1.2.3");
	CU_ASSERT_STRING_EQUAL(c->serialize_hosts.items[1], "10.0.0.0/8");
	CU_ASSERT_EQUAL(c->serialize_max, 2);
	CU_ASSERT_FALSE(c->retry_include_ip_address);
	CU_ASSERT_EQUAL(c->hosts_require_tls.n, 1);
	CU_ASSERT_EQUAL(c->hosts_avoid_tls.n, 2);
	CU_ASSERT_EQUAL(c->tls_verify_hosts.n, 1);
	CU_ASSERT_STRING_EQUAL(c->tls_verify_certificates, "system");
	CU_ASSERT_STRING_EQUAL(c->tls_certificate, "/etc/qkit/client cert.pem");
	CU_ASSERT_STRING_EQUAL(c->tls_privatekey, "/etc/qkit/key.pem");
	CU_ASSERT_EQUAL(c->size_addition, -1);
	CU_ASSERT_FALSE(c->delay_after_cutoff);
	CU_ASSERT_FALSE(c->keepalive);
	CU_ASSERT_STRING_EQUAL(c->interface, "2001:db8::25");
	CU_ASSERT_EQUAL(c->remote_max_parallel, 8);
	CU_ASSERT_EQUAL(c->queue_run_max, 0);
	CU_ASSERT_EQUAL(c->retry_interval_max, 43200);

	/* routes, IPv6 literals and ports included */
	CU_ASSERT_EQUAL_FATAL(c->nroutes, 3);
	r = &c->routes[0];
	CU_ASSERT_STRING_EQUAL(r->pattern, "example.com");
	CU_ASSERT_EQUAL_FATAL(r->nhosts, 6);
	CU_ASSERT_STRING_EQUAL(r->hosts[0].name, "::1");
	CU_ASSERT_EQUAL(r->hosts[0].port, 2525);
	CU_ASSERT_FALSE(r->hosts[0].mx);
	CU_ASSERT_STRING_EQUAL(r->hosts[1].name, "2001:db8::5");
	CU_ASSERT_EQUAL(r->hosts[1].port, 0);
	CU_ASSERT_STRING_EQUAL(r->hosts[2].name, "127.0.0.1");
	CU_ASSERT_EQUAL(r->hosts[2].port, 26);
	CU_ASSERT_STRING_EQUAL(r->hosts[3].name, "relay.example");
	CU_ASSERT_EQUAL(r->hosts[3].port, 0);
	CU_ASSERT_TRUE(r->hosts[4].mx);
	CU_ASSERT_STRING_EQUAL(r->hosts[4].name, "mx");
	CU_ASSERT_EQUAL(r->hosts[4].port, 0);
	CU_ASSERT_TRUE(r->hosts[5].mx);
	CU_ASSERT_EQUAL(r->hosts[5].port, 587);
	CU_ASSERT_EQUAL(c->routes[1].hosts[0].port, 587);
	CU_ASSERT_TRUE(c->routes[2].hosts[0].mx);

	/* first match wins */
	CU_ASSERT_PTR_EQUAL(q_conf_route(c, "example.com"), &c->routes[0]);
	CU_ASSERT_PTR_EQUAL(q_conf_route(c, "EXAMPLE.COM"), &c->routes[0]);
	CU_ASSERT_PTR_EQUAL(q_conf_route(c, "a.example.net"), &c->routes[1]);
	CU_ASSERT_PTR_EQUAL(q_conf_route(c, "example.net"), &c->routes[2]);
	CU_ASSERT_PTR_EQUAL(q_conf_route(c, "sub.example.com"), &c->routes[2]);

	/* retry rules */
	CU_ASSERT_EQUAL_FATAL(c->nretry, 2);
	CU_ASSERT_STRING_EQUAL(c->retry[0].pattern, "*.example.com");
	CU_ASSERT_STRING_EQUAL(c->retry[0].kind, "*");
	CU_ASSERT_EQUAL_FATAL(c->retry[0].nalgo, 3);
	CU_ASSERT_EQUAL(c->retry[0].algo[0].type, 'F');
	CU_ASSERT_EQUAL(c->retry[0].algo[0].cutoff, 3600);
	CU_ASSERT_EQUAL(c->retry[0].algo[0].p1, 300);
	CU_ASSERT_EQUAL(c->retry[0].algo[1].type, 'G');
	CU_ASSERT_EQUAL(c->retry[0].algo[1].cutoff, 16 * 3600);
	CU_ASSERT_EQUAL(c->retry[0].algo[1].p1, 3600);
	CU_ASSERT_DOUBLE_EQUAL(c->retry[0].algo[1].factor, 1.5, 1e-9);
	CU_ASSERT_EQUAL(c->retry[0].algo[2].cutoff, 4 * 86400);
	CU_ASSERT_STRING_EQUAL(c->retry[1].kind, "refused");
	q_conf_free(&c);
}

/* ---- the other accepted spellings ---- */

static void test_syntax(void)
{
	const char *err = NULL;
	struct q_conf *c = load_text(
		"  port=26   \r\n"                       /* CRLF, no spaces */
		"keepalive = YES\n"
		"no_delay_after_cutoff\n"
		"retry_include_ip_address\n"
		"# a \\\n"                              /* no continuation in comments */
		"   # b \\\n"
		"route example.com = a.example,\\\n"
		"      b.example \\\n"
		"      c.example\n"
		"tls_certificate = /etc/\\\n"
		"      qkit/cert.pem\n"
		"max_rcpt = 2K\n"
		"size_addition = 1M\n"
		"hosts_file = \"a \\\"quoted\\\" \\\\name \"\n"
		"retry_interval_max = 90\n", &err);

	if (c == NULL)
		fprintf(stderr, "\n  %s\n", err);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	CU_ASSERT_EQUAL(c->port, 26);
	CU_ASSERT_TRUE(c->keepalive);
	CU_ASSERT_FALSE(c->delay_after_cutoff);
	CU_ASSERT_TRUE(c->retry_include_ip_address);
	CU_ASSERT_EQUAL_FATAL(c->nroutes, 1);
	CU_ASSERT_EQUAL_FATAL(c->routes[0].nhosts, 3);
	CU_ASSERT_STRING_EQUAL(c->routes[0].hosts[2].name, "c.example");
	CU_ASSERT_STRING_EQUAL(c->tls_certificate, "/etc/qkit/cert.pem");
	CU_ASSERT_EQUAL(c->max_rcpt, 2048);
	CU_ASSERT_EQUAL(c->size_addition, 1048576);
	CU_ASSERT_STRING_EQUAL(c->hosts_file, "a \"quoted\" \\name ");
	CU_ASSERT_EQUAL(c->retry_interval_max, 90);
	q_conf_free(&c);

	/* the longest retry_interval_max allowed is accepted */
	c = load_text("retry_interval_max = 3d12h\n", &err);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	CU_ASSERT_EQUAL(c->retry_interval_max, 3 * 86400 + 12 * 3600);
	q_conf_free(&c);

	/* an empty value unsets a string and empties a list */
	c = load_text("tls_verify_certificates =\nserialize_hosts =\n"
		      "fallback_hosts =   \n", &err);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	CU_ASSERT_PTR_NULL(c->tls_verify_certificates);
	CU_ASSERT_EQUAL(c->serialize_hosts.n, 0);
	CU_ASSERT_EQUAL(c->nfallback, 0);
	q_conf_free(&c);
}

/* ---- errors: every kind, with file and line ---- */

static const struct {
	const char *text;
	unsigned line;
	const char *what;          /* the text after "FILE:LINE: " starts so */
} err_cases[] = {
	{ "hosts_max_tyr = 3\n", 1,
	  "unknown option 'hosts_max_tyr' (did you mean 'hosts_max_try'?)" },
	{ "\n\n# c\nwhatever = 1\n", 4, "unknown option 'whatever'" },
	{ "connect_timeout = soon\n", 1,
	  "connect_timeout: expected a time such as 30s, 5m, 2h, not 'soon'" },
	{ "port = 25\ndata_timeout = 1h30\n", 2,
	  "data_timeout: expected a time such as 30s, 5m, 2h" },
	{ "final_timeout =\n", 1,
	  "final_timeout: expected a time such as 30s, 5m, 2h, got nothing" },
	{ "command_timeout = 0s\n", 1, "command_timeout: must not be zero" },
	{ "port = 0\n", 1, "port: expected a port number from 1 to 65535, not '0'" },
	{ "port = 65536\n", 1, "port: expected a port number from 1 to 65535" },
	{ "max_rcpt = -1\n", 1,
	  "max_rcpt: expected a whole number of at least 1, not '-1'" },
	{ "max_rcpt = 0\n", 1, "max_rcpt: must be at least 1" },
	{ "batch_max = 1x\n", 1,
	  "batch_max: expected a whole number (0 or more), not '1x'" },
	{ "batch_max = 99999999999\n", 1,
	  "batch_max: expected a whole number (0 or more)" },
	/* retry_interval_max: at most 3d12h (Q_RETRY_INTERVAL_LIMIT); a
	 * longer interval would outlive the retry data (7d) */
	{ "port = 25\nretry_interval_max = 3d12h1s\n", 2,
	  "retry_interval_max: must be at most 3d12h, not '3d12h1s'" },
	{ "retry_interval_max = 1w\n", 1,
	  "retry_interval_max: must be at most 3d12h, not '1w'" },
	{ "# huge\n\nretry_interval_max = 9223372036854775807\n", 3,
	  "retry_interval_max: must be at most 3d12h, not '9223372036854775807'" },
	{ "retry_interval_max = 106751991167300d\n", 1,
	  "retry_interval_max: must be at most 3d12h" },
	{ "keepalive = maybe\n", 1,
	  "keepalive: expected true or false (or yes/no, 1/0), not 'maybe'" },
	{ "retry_include_ip_address =\n", 1,
	  "retry_include_ip_address: expected true or false (or yes/no, 1/0), "
	  "got nothing" },
	{ "keepalive = \"yes\"\n", 1,
	  "keepalive: quotes are allowed only around file names" },
	{ "size_addition = lots\n", 1, "size_addition: expected a whole number" },
	{ "keepalive = yes\n# x\nkeepalive = no\n", 3,
	  "keepalive set twice (first at line 1)" },
	{ "port = 25\nno_keepalive\nkeepalive\n", 3,
	  "keepalive set twice (first at line 2)" },
	{ "port 25\n", 1, "expected '=' after 'port'" },
	{ "no_port\n", 1, "expected '=' after 'no_port'" },
	{ "= 5\n", 1, "expected an option name, 'route' or 'retry', not '= 5'" },
	{ "interface = eth0\n", 1, "interface: expected an IP address" },
	{ "primary_hostname = -bad.example\n", 1,
	  "primary_hostname: expected a host name" },
	{ "spool_directory =\n", 1,
	  "spool_directory: expected a directory name, got nothing" },
	{ "hosts_file = \"unterminated\n", 1,
	  "hosts_file: unterminated quoted string" },
	{ "hosts_file = \"a\" b\n", 1, "hosts_file: unterminated quoted string, "
	  "or text after the closing quote" },
	{ "tls_privatekey = /k.pem\n", 1,
	  "tls_privatekey is set but tls_certificate is not" },
	{ "port = 25\x01\n", 1, "control character \\x01 in the line" },
	{ "port = 25\nkeepalive = yes \\\n", 2,
	  "the line ends in '\\' (continued) but the file ends there" },
	{ "route a.example = \\\n  b.example:99999\n", 1,
	  "route a.example: '99999': expected a port number from 1 to 65535" },
	/* route lines */
	{ "route example.com [::1]:25\n", 1,
	  "route: expected 'route PATTERN = HOST[:PORT] ...'" },
	{ "route = x\n", 1, "route: expected 'route PATTERN = HOST[:PORT] ...'" },
	{ "route example.com =\n", 1,
	  "route example.com: expected at least one host after '='" },
	{ "route example.com = , ,\n", 1,
	  "route example.com: expected at least one host after '='" },
	{ "route example.com = ::1\n", 1,
	  "route example.com: '::1': write IPv6 addresses in brackets" },
	{ "route example.com = 2001:db8::1:25\n", 1,
	  "route example.com: '2001:db8::1:25': write IPv6 addresses in brackets" },
	{ "route example.com = [::1]:0\n", 1,
	  "route example.com: '0': expected a port number from 1 to 65535" },
	{ "route example.com = host.example:smtpx\n", 1,
	  "route example.com: 'smtpx': expected a port number" },
	{ "route example.com = [::1\n", 1,
	  "route example.com: '[::1': '[' without ']'" },
	{ "route example.com = [::1]25\n", 1,
	  "route example.com: '[::1]25': expected ':PORT' after ']'" },
	{ "route example.com = [not-ip]:25\n", 1,
	  "route example.com: '[not-ip]' is not an IP address" },
	{ "route example.com = bad_host!\n", 1,
	  "route example.com: 'bad_host!' is not a host name or IP address" },
	{ "route a b = x.example\n", 1,
	  "route: expected one domain pattern before '=', not 'a b'" },
	{ "route (x) = y.example\n", 1,
	  "route: '(x)' is not a domain pattern" },
	/* retry lines */
	{ "retry = 5\n", 1, "retry: expected 'retry PATTERN ERROR ALGORITHMS'" },
	{ "retry *\n", 1, "retry: expected 'retry PATTERN ERROR ALGORITHMS'" },
	{ "retry * *\n", 1, "retry * *: expected retry algorithms such as "
	  "F,2h,15m; G,16h,1h,1.5; F,4d,6h" },
	{ "retry * bogus_kind F,1h,5m\n", 1,
	  "retry *: unknown error kind 'bogus_kind'" },
	{ "retry * * F,1h\n", 1, "retry * *: item 1: F needs a cutoff" },
	{ "retry * * X,1h,5m\n", 1, "retry * *: item 1: unknown algorithm" },
	{ "retry * * F,1h,5m; G,2h,1h,x\n", 1, "retry * *: item 2: bad factor" },
	{ "retry * * F,1h,5m\nretry * * H,4d,1h\n", 2,
	  "retry * *: item 1: H needs a cutoff, a first interval and a factor" },
	{ "retry * * H,4d,1h,1\n", 1,
	  "retry * *: item 1: H needs a factor greater than 1" },
	{ "retry * * F,2h,15m; F,1h,5m\n", 1, "retry * *: item 2" },
	{ "retry (x) * F,2h,15m\n", 1, "retry: '(x)' is not a host, domain or "
	  "address pattern" },
	{ "retry @example.com * F,2h,15m\n", 1, "retry: '@example.com' is not" },
	/* host lists and host specs in options */
	{ "fallback_hosts = mx\n", 1,
	  "fallback_hosts: 'mx' is allowed only in route lines" },
	{ "fallback_hosts = ::1\n", 1,
	  "fallback_hosts: '::1': write IPv6 addresses in brackets" },
	{ "serialize_hosts = 10.0.0.0/33\n", 1,
	  "serialize_hosts: '10.0.0.0/33' is not an IP network" },
	{ "hosts_avoid_tls = 2001:db8::/129\n", 1,
	  "hosts_avoid_tls: '2001:db8::/129' is not an IP network" },
	{ "hosts_require_tls = 10.0.0.0/\n", 1,
	  "hosts_require_tls: '10.0.0.0/' is not an IP network" },
	{ "tls_verify_hosts = good.example, bad$host\n", 1,
	  "tls_verify_hosts: 'bad$host' is not a host name, pattern, IP address "
	  "or network" },
};

static void test_errors(void)
{
	size_t i;

	CU_ASSERT(N(err_cases) >= 20);
	for (i = 0; i < N(err_cases); i++) {
		struct q_conf *c = (struct q_conf *)&c;   /* must become NULL */
		const char *err = NULL;
		char want[1024];
		const char *path = write_conf(err_cases[i].text, 0);
		int r;

		CU_ASSERT_PTR_NOT_NULL_FATAL(path);
		r = q_conf_load(path, &c, &err);
		snprintf(want, sizeof(want), "%s:%u: %s", path, err_cases[i].line,
			 err_cases[i].what);
		if (r != -1 || err == NULL || strncmp(err, want, strlen(want)) != 0)
			fprintf(stderr, "\n  conf error case %zu:\n   got  %s\n"
				"   want %s\n", i, err ? err : "(none)", want);
		CU_ASSERT_EQUAL(r, -1);
		CU_ASSERT_PTR_NULL(c);
		CU_ASSERT_PTR_NOT_NULL_FATAL(err);
		CU_ASSERT_NSTRING_EQUAL(err, want, strlen(want));
	}
}

static void test_error_files(void)
{
	struct q_conf *c = NULL;
	const char *err = NULL;
	const char *path;
	char missing[4200];

	/* a named file that does not exist */
	path = write_conf("", 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(path);
	snprintf(missing, sizeof(missing), "%s.missing", path);
	CU_ASSERT_EQUAL(q_conf_load(missing, &c, &err), -1);
	CU_ASSERT_PTR_NULL(c);
	CU_ASSERT_PTR_NOT_NULL_FATAL(err);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, missing));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "cannot open"));
	/* a NUL byte: not a text file; the line is named */
	path = write_conf("port = 25\nkeep\0alive\n", 21);
	CU_ASSERT_EQUAL(q_conf_load(path, &c, &err), -1);
	CU_ASSERT_PTR_NULL(c);
	CU_ASSERT_PTR_NOT_NULL_FATAL(err);
	snprintf(missing, sizeof(missing), "%s:2: NUL byte", path);
	CU_ASSERT_NSTRING_EQUAL(err, missing, strlen(missing));
	/* a directory */
	path = t_tmpdir();
	CU_ASSERT_EQUAL(q_conf_load(path, &c, &err), -1);
	CU_ASSERT_PTR_NULL(c);
	/* an escape sequence in a bad value never reaches the terminal raw */
	c = load_text("port = \x1b[2J\n", &err);
	CU_ASSERT_PTR_NULL(c);
	CU_ASSERT_PTR_NOT_NULL_FATAL(err);
	CU_ASSERT_PTR_NULL(strchr(err, '\x1b'));
}

/* ---- print and load again ---- */

static void round_trip(const char *text)
{
	struct q_conf *c1 = NULL, *c2 = NULL;
	const char *err = NULL;
	char *p1, *p2, *body1, *body2;

	if (text != NULL) {
		c1 = load_text(text, &err);
	} else {
		CU_ASSERT_EQUAL(q_conf_load(NULL, &c1, &err), 0);
	}
	CU_ASSERT_PTR_NOT_NULL_FATAL(c1);
	p1 = print_conf(c1);
	c2 = load_text(p1, &err);
	if (c2 == NULL)
		fprintf(stderr, "\n  reload failed: %s\n%s\n", err, p1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c2);
	p2 = print_conf(c2);
	/* the first line names the file read; the rest must be equal */
	body1 = strchr(p1, '\n');
	body2 = strchr(p2, '\n');
	CU_ASSERT_PTR_NOT_NULL_FATAL(body1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(body2);
	if (strcmp(body1, body2) != 0)
		fprintf(stderr, "\n  round trip differs:\n%s\n--\n%s\n", p1, p2);
	CU_ASSERT_STRING_EQUAL(body1, body2);
	/* and the values are the same */
	CU_ASSERT_STRING_EQUAL(c1->spool_directory, c2->spool_directory);
	CU_ASSERT_EQUAL(c1->connect_timeout, c2->connect_timeout);
	CU_ASSERT_EQUAL(c1->size_addition, c2->size_addition);
	CU_ASSERT_EQUAL(c1->nroutes, c2->nroutes);
	CU_ASSERT_EQUAL(c1->nretry, c2->nretry);
	for (size_t i = 0; i < c1->nretry && i < c2->nretry; i++) {
		CU_ASSERT_EQUAL(c1->retry[i].nalgo, c2->retry[i].nalgo);
		for (size_t j = 0; j < c1->retry[i].nalgo; j++) {
			CU_ASSERT_EQUAL(c1->retry[i].algo[j].type,
					c2->retry[i].algo[j].type);
			CU_ASSERT_EQUAL(c1->retry[i].algo[j].cutoff,
					c2->retry[i].algo[j].cutoff);
			CU_ASSERT_EQUAL(c1->retry[i].algo[j].p1,
					c2->retry[i].algo[j].p1);
			CU_ASSERT(c1->retry[i].algo[j].factor ==
				  c2->retry[i].algo[j].factor);
		}
	}
	if (c1->tls_certificate != NULL) {
		CU_ASSERT_PTR_NOT_NULL_FATAL(c2->tls_certificate);
		CU_ASSERT_STRING_EQUAL(c1->tls_certificate, c2->tls_certificate);
	}
	free(p1);
	free(p2);
	q_conf_free(&c1);
	q_conf_free(&c2);
}

static void test_round_trip(void)
{
	round_trip(NULL);
	round_trip(full_conf);
	round_trip("connect_timeout = 1w2d3h4m5s\n"
		   "tls_certificate = \" lead and trail \"\n"
		   "hosts_file = \"ends in backslash\\\\\"\n"
		   "retry * * G,1d,7m,1.25; G,2d,1h,2; G,3d,1h,1.1\n"
		   "retry *@example.org rcpt_4xx F,1h,1m\n"
		   "retry postmaster@example.org * F,1d,1h\n"
		   "route *.v6.example = [::1]:2525\n");
	/* Exim's H algorithm (G's parameters) */
	round_trip("retry * * H,4d,1h,1.5\n"
		   "retry *.example.net refused F,2h,15m; h,16h,1h,2.0004; "
		   "H,4d,6h,1.25\n");
}

static void test_print(void)
{
	struct q_conf *c = load_text(full_conf, NULL);
	char *p;

	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	p = print_conf(c);
	/* every option appears, routes after options, retry rules last */
	CU_ASSERT_PTR_NOT_NULL(strstr(p, "\nport = 2525\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(p, "\ncommand_timeout = 1m30s\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(p, "\nretry_include_ip_address = false\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(p, "\ninterface = 2001:db8::25\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(p, "\nfallback_hosts = relay1.example [::1]:2526 127.0.0.2:26\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(p, "\nserialize_hosts = !10.1.2.3, 10.0.0.0/8\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(p, "\ntls_certificate = /etc/qkit/client cert.pem\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(p, "\nroute example.com = [::1]:2525 [2001:db8::5] 127.0.0.1:26 relay.example mx mx:587\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(p, "\nretry *.example.com * F,1h,5m; G,16h,1h,1.5; F,4d,6h\n"));
	CU_ASSERT(strstr(p, "\nroute ") > strstr(p, "\nretry_interval_max = 12h\n"));
	CU_ASSERT(strstr(p, "\nretry *") > strstr(p, "\nroute * = mx\n"));
	free(p);
	q_conf_free(&c);

	/* a factor is kept to 1/1000 and printed as such, so that the
	 * printed configuration loads back to the same rules (fuzz finding
	 * 6: 2.0912354775804 was printed as 2.09123547758) */
	c = load_text("retry * refused G,2d,10m,2.0912354775804; G,3d,1h,1.25\n",
		      NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	p = print_conf(c);
	CU_ASSERT_PTR_NOT_NULL(strstr(p, "\nretry * refused G,2d,10m,2.091; G,3d,1h,1.25\n"));
	free(p);
	q_conf_free(&c);

	/* an H rule prints as written, factor included */
	c = load_text("retry * * H,4d,1h,1.5\n"
		      "retry *.example.net refused F,2h,15m; h,16h,60m,2.0004\n",
		      NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	CU_ASSERT_EQUAL_FATAL(c->nretry, 2);
	CU_ASSERT_EQUAL_FATAL(c->retry[0].nalgo, 1);
	CU_ASSERT_EQUAL(c->retry[0].algo[0].type, 'H');
	CU_ASSERT_EQUAL(c->retry[0].algo[0].cutoff, 4 * 86400);
	CU_ASSERT_EQUAL(c->retry[0].algo[0].p1, 3600);
	CU_ASSERT_DOUBLE_EQUAL(c->retry[0].algo[0].factor, 1.5, 1e-12);
	p = print_conf(c);
	CU_ASSERT_PTR_NOT_NULL(strstr(p, "\nretry * * H,4d,1h,1.5\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(p, "\nretry *.example.net refused F,2h,15m; H,16h,1h,2\n"));
	free(p);
	q_conf_free(&c);
}

/* ---- host lists ---- */

static void test_hostlist(void)
{
	static char *items[] = {
		"!10.1.2.3", "10.0.0.0/8", "2001:db8::/32", "[fe80::]/10",
		"!bad.slow.example", "*.slow.example", "mx?.example",
		"192.0.2.7", "exact.example", "172.16.0.0/12",
	};
	static const struct q_hostlist l = { N(items), items };
	static char *star_items[] = { "*" };
	static char *neg_items[] = { "!a.example", "*" };
	static const struct q_hostlist star = { 1, star_items };
	static const struct q_hostlist none = { 0, NULL };
	static const struct q_hostlist neg = { 2, neg_items };
	static const struct {
		const char *name, *ip;
		bool want;
	} t[] = {
		{ NULL, "10.9.8.7", true },
		{ NULL, "10.1.2.3", false },          /* negated first */
		{ NULL, "11.0.0.1", false },
		{ NULL, "2001:db8:1::5", true },
		{ NULL, "2001:db9::5", false },
		{ NULL, "fe80::1", true },
		{ NULL, "febf::1", true },
		{ NULL, "fec0::1", false },
		{ NULL, "::ffff:10.2.3.4", true },    /* v4-mapped */
		{ NULL, "192.0.2.7", true },
		{ NULL, "192.0.2.8", false },
		{ NULL, "172.31.255.255", true },
		{ NULL, "172.32.0.0", false },
		{ "a.slow.example", NULL, true },
		{ "A.SLOW.EXAMPLE", "203.0.113.1", true },
		{ "bad.slow.example", "203.0.113.9", false }, /* negated name */
		{ "bad.slow.example", "10.0.0.1", true },     /* the net comes first */
		{ "slow.example", NULL, false },
		{ "mx1.example", NULL, true },
		{ "mx12.example", NULL, false },
		{ "exact.example", NULL, true },
		{ "other.example", "203.0.113.1", false },
		{ "10.5.5.5", NULL, true },           /* an IP given as the name */
		{ NULL, NULL, false },
		{ "x.example", "not an ip", false },
	};
	size_t i;

	for (i = 0; i < N(t); i++) {
		bool got = q_hostlist_match(&l, t[i].name, t[i].ip);

		if (got != t[i].want)
			fprintf(stderr, "\n  hostlist case %zu (%s, %s): %d\n", i,
				t[i].name ? t[i].name : "-", t[i].ip ? t[i].ip : "-",
				got);
		CU_ASSERT_EQUAL(got, t[i].want);
	}
	CU_ASSERT_TRUE(q_hostlist_match(&star, "any.example", NULL));
	CU_ASSERT_TRUE(q_hostlist_match(&star, NULL, "192.0.2.1"));
	CU_ASSERT_FALSE(q_hostlist_match(&none, "any.example", "192.0.2.1"));
	CU_ASSERT_FALSE(q_hostlist_match(&neg, "a.example", NULL));
	CU_ASSERT_TRUE(q_hostlist_match(&neg, "b.example", NULL));
	CU_ASSERT_FALSE(q_hostlist_match(NULL, "b.example", NULL));
}

/* the same through a loaded config */
static void test_hostlist_conf(void)
{
	const char *err = NULL;
	struct q_conf *c = load_text(
		"serialize_hosts = !127.0.0.2 127.0.0.0/8, [::1]\n"
		"hosts_require_tls = *.tls.example, !*\n"
		"hosts_avoid_tls = ::ffff:0:0/96\n", &err);

	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	CU_ASSERT_TRUE(q_hostlist_match(&c->serialize_hosts, "localhost", "127.0.0.1"));
	CU_ASSERT_FALSE(q_hostlist_match(&c->serialize_hosts, "localhost", "127.0.0.2"));
	CU_ASSERT_TRUE(q_hostlist_match(&c->serialize_hosts, "localhost", "::1"));
	CU_ASSERT_FALSE(q_hostlist_match(&c->serialize_hosts, "localhost", "::2"));
	CU_ASSERT_TRUE(q_hostlist_match(&c->hosts_require_tls, "a.tls.example", NULL));
	CU_ASSERT_FALSE(q_hostlist_match(&c->hosts_require_tls, "a.example", NULL));
	CU_ASSERT_TRUE(q_hostlist_match(&c->hosts_avoid_tls, NULL, "::ffff:1.2.3.4"));
	CU_ASSERT_FALSE(q_hostlist_match(&c->hosts_avoid_tls, NULL, "1.2.3.4"));
	q_conf_free(&c);
}

/* ---- patterns ---- */

static void test_pattern(void)
{
	static const struct {
		const char *pattern, *subject;
		bool want;
	} t[] = {
		{ "*", "anything.example", true },
		{ "*", "", true },
		{ "example.com", "example.com", true },
		{ "example.com", "EXAMPLE.Com", true },
		{ "example.com", "a.example.com", false },
		{ "example.com", "example.co", false },
		{ "*.example.com", "a.example.com", true },
		{ "*.example.com", "a.b.example.com", true },
		{ "*.example.com", "A.EXAMPLE.COM", true },
		{ "*.example.com", "example.com", false },
		{ "*.example.com", "badexample.com", false },
		{ "*example.com", "badexample.com", true },    /* a plain glob */
		{ "mx?.example", "mx1.example", true },
		{ "mx?.example", "mx10.example", false },
		{ "mx[0-9].example", "mx7.example", true },
		{ "*@example.com", "user@example.com", true },
		{ "*@example.com", "user@EXAMPLE.COM", true },
		{ "*@example.com", "user@other.com", false },
		{ "*@example.com", "example.com", true },       /* a bare domain */
		{ "*@*.example.com", "u@a.example.com", true },
		{ "example.com", "user@example.com", true },    /* address domain */
		{ "*.example.com", "user@a.example.com", true },
		{ "other.com", "user@example.com", false },
	};
	size_t i;

	for (i = 0; i < N(t); i++) {
		bool got = q_pattern_match(t[i].pattern, t[i].subject);

		if (got != t[i].want)
			fprintf(stderr, "\n  pattern case %zu (%s, %s): %d\n", i,
				t[i].pattern, t[i].subject, got);
		CU_ASSERT_EQUAL(got, t[i].want);
	}
	CU_ASSERT_FALSE(q_pattern_match(NULL, "x"));
	CU_ASSERT_FALSE(q_pattern_match("x", NULL));
}

/* ---- which file ---- */

static void test_locate(void)
{
	const char *old = getenv("QKIT_CONFIG");
	char *saved = old != NULL ? strdup(old) : NULL;
	const char *sys = SYSCONFDIR "/qkit.conf";

	setenv("QKIT_CONFIG", "/from/env.conf", 1);
	CU_ASSERT_STRING_EQUAL(q_conf_locate("/from/option.conf"),
			       "/from/option.conf");
	CU_ASSERT_STRING_EQUAL(q_conf_locate(NULL), "/from/env.conf");
	setenv("QKIT_CONFIG", "", 1);
	if (access(sys, F_OK) == 0) {
		CU_ASSERT_STRING_EQUAL(q_conf_locate(NULL), sys);
	} else {
		CU_ASSERT_PTR_NULL(q_conf_locate(NULL));
	}
	unsetenv("QKIT_CONFIG");
	if (access(sys, F_OK) == 0) {
		CU_ASSERT_STRING_EQUAL(q_conf_locate(NULL), sys);
	} else {
		CU_ASSERT_PTR_NULL(q_conf_locate(NULL));
	}
	CU_ASSERT_STRING_EQUAL(q_conf_locate("x.conf"), "x.conf");
	if (saved != NULL)
		setenv("QKIT_CONFIG", saved, 1);
	free(saved);
}

void suite_conf(void)
{
	CU_pSuite s = CU_add_suite("conf", NULL, NULL);

	CU_add_test(s, "defaults", test_defaults);
	CU_add_test(s, "every option, routes, retry rules", test_full);
	CU_add_test(s, "accepted spellings", test_syntax);
	CU_add_test(s, "error table (FILE:LINE: what)", test_errors);
	CU_add_test(s, "missing file, NUL byte, directory", test_error_files);
	CU_add_test(s, "print then load: same config", test_round_trip);
	CU_add_test(s, "print format", test_print);
	CU_add_test(s, "host lists with CIDR", test_hostlist);
	CU_add_test(s, "host lists from the file", test_hostlist_conf);
	CU_add_test(s, "q_pattern_match", test_pattern);
	CU_add_test(s, "q_conf_locate", test_locate);
}
