/*
 * tests/test_peers.c - qrun against real SMTP servers on loopback:
 * Postfix's smtp-sink (extracted from the Debian package into
 * build/peers by tools/deps.sh test) as a plain pipelining sink, and Exim
 * 4 (exim4-daemon-light, GnuTLS) as a STARTTLS + PIPELINING receiver.
 * These peers are required: a missing one is a failed test, not a skip.
 */
#include "config.h"
#include "tlib.h"
#include "tsrv.h"

#include <CUnit/CUnit.h>
#include <dirent.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_conf[4096];

/* A spool with a config; extra lines appended. */
static const char *mk_conf(const char *dir, const char *extra)
{
	char buf[32768];
	snprintf(g_conf, sizeof(g_conf), "%s/qkit.conf", dir);
	snprintf(buf, sizeof(buf),
		 "spool_directory = %s/spool\n"
		 "primary_hostname = client.test\n"
		 "connect_timeout = 5s\ncommand_timeout = 10s\n"
		 "data_timeout = 10s\nfinal_timeout = 10s\n%s",
		 dir, extra);
	t_write_file(g_conf, buf);
	return g_conf;
}

/* Submit n messages of about 4 KB, recipients over ndom domains. */
static int submit_n(const char *conf, int n, int ndom, int rcpts)
{
	char body[5000];
	size_t l = 0;
	l += (size_t)snprintf(body + l, sizeof(body) - l,
			      "Subject: peer test\nFrom: a@sender.test\n\n");
	while (l < 4000)
		l += (size_t)snprintf(body + l, sizeof(body) - l,
				      "%s", "The quick brown fox jumps over the lazy dog.\n");
	int ok = 0;
	for (int i = 0; i < n; i++) {
		char r[3][64];
		const char *argv[12] = {t_bin("qctl"), "-C", conf, "submit", "-f",
					"a@sender.test"};
		int k = 6;
		for (int j = 0; j < rcpts && j < 3; j++) {
			snprintf(r[j], sizeof(r[j]), "u%d.%d@d%d.test", i, j,
				 (i + j) % ndom);
			argv[k++] = r[j];
		}
		argv[k] = NULL;
		struct t_out o = {0};
		if (t_run(argv, body, &o) == 0 && o.status == 0)
			ok++;
		t_out_free(&o);
	}
	return ok;
}

static long json_field(const char *json, const char *name)
{
	char key[64];
	snprintf(key, sizeof(key), "\"%s\":", name);
	const char *p = json ? strstr(json, key) : NULL;
	return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

static long queue_count(const char *conf)
{
	const char *argv[] = {t_bin("qctl"), "-C", conf, "list", "-c", NULL};
	struct t_out o = {0};
	long n = -1;
	if (t_run(argv, NULL, &o) == 0 && o.status == 0)
		n = strtol(o.out, NULL, 10);
	t_out_free(&o);
	return n;
}

static int run_qrun(const char *conf, const char *p, struct t_out *o)
{
	const char *argv[] = {t_bin("qrun"), "-C", conf, "-P", p, "--json", NULL};
	return t_run(argv, NULL, o);
}

/* smtp-sink prints running counters "... mesg=N" (with \r); the last one. */
static long sink_msgs(const char *file)
{
	char *data = t_read_file(file, NULL);
	long n = -1;
	for (char *p = data; p && (p = strstr(p, "mesg=")) != NULL; p += 5)
		n = strtol(p + 5, NULL, 10);
	free(data);
	return n;
}

static void test_smtp_sink(void)
{
	char sink[4096], out[4096], listen[64];
	snprintf(sink, sizeof(sink), "%s/build/peers/usr/sbin/smtp-sink", t_top());
	CU_ASSERT_FATAL(access(sink, X_OK) == 0);
	const char *dir = t_tmpdir();
	unsigned port = ts_free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
	snprintf(out, sizeof(out), "%s/sink.out", dir);
	char libs[4200];
	snprintf(libs, sizeof(libs), "LD_LIBRARY_PATH=%s/build/peers/usr/lib/postfix",
		 t_top());
	const char *env[] = {libs, NULL};
	const char *argv[] = {sink, "-u", "nobody", "-c", listen, "100", NULL};
	pid_t pid = ts_spawn(argv, env, out);
	CU_ASSERT_FATAL(pid > 0);
	CU_ASSERT_FATAL(ts_wait_port("127.0.0.1", port, 5000) == 0);

	char extra[256];
	snprintf(extra, sizeof(extra), "route * = 127.0.0.1:%u\n", port);
	const char *conf = mk_conf(dir, extra);
	CU_ASSERT_EQUAL_FATAL(submit_n(conf, 300, 10, 2), 300);
	CU_ASSERT_EQUAL(queue_count(conf), 300);

	struct t_out o = {0};
	CU_ASSERT_EQUAL(run_qrun(conf, "2", &o), 0);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_EQUAL(json_field(o.out, "delivered"), 600);
	CU_ASSERT_EQUAL(json_field(o.out, "deferred"), 0);
	CU_ASSERT_EQUAL(json_field(o.out, "completed"), 300);
	/* one host list for every domain: at most one connection per worker
	   (batch_max 500 > 300) */
	long conns = json_field(o.out, "connections");
	CU_ASSERT(conns >= 1 && conns <= 2);
	t_out_free(&o);
	CU_ASSERT_EQUAL(queue_count(conf), 0);
	ts_stop(pid);
	/* two recipients share one transaction: 300 messages at the sink */
	CU_ASSERT_EQUAL(sink_msgs(out), 300);
}

/* ---- Exim ---- */

struct exim {
	pid_t pid;
	unsigned port;
	char dir[4096];
};

static int exim_start(struct exim *e, const char *dir)
{
	struct passwd *pw = getpwnam("Debian-exim");
	if (pw == NULL || access("/usr/sbin/exim4", X_OK) != 0)
		return -1;
	snprintf(e->dir, sizeof(e->dir), "%s/exim", dir);
	char p[4300], conf[32768];
	mkdir(e->dir, 0755);
	chmod(dir, 0711);
	snprintf(p, sizeof(p), "%s/spool", e->dir);
	mkdir(p, 0750);
	chown(p, pw->pw_uid, pw->pw_gid);
	snprintf(p, sizeof(p), "%s/out", e->dir);
	mkdir(p, 0750);
	chown(p, pw->pw_uid, pw->pw_gid);

	/* a certificate for mx.test, made with the openssl command */
	char key[4300], cert[4300];
	snprintf(key, sizeof(key), "%s/key.pem", e->dir);
	snprintf(cert, sizeof(cert), "%s/cert.pem", e->dir);
	const char *ossl[] = {"openssl", "req", "-x509", "-newkey", "rsa:2048",
			      "-nodes", "-days", "2", "-subj", "/CN=mx.test",
			      "-addext", "subjectAltName=DNS:mx.test",
			      "-keyout", key, "-out", cert, NULL};
	struct t_out o = {0};
	if (t_run(ossl, NULL, &o) != 0 || o.status != 0) {
		t_out_free(&o);
		return -1;
	}
	t_out_free(&o);
	chown(key, pw->pw_uid, pw->pw_gid);
	chmod(cert, 0644);

	e->port = ts_free_port();
	snprintf(conf, sizeof(conf),
		 "primary_hostname = mx.test\n"
		 "exim_user = Debian-exim\nexim_group = Debian-exim\n"
		 "spool_directory = %s/spool\n"
		 "log_file_path = %s/spool/%%slog\n"
		 "pid_file_path = %s/spool/exim.pid\n"
		 "daemon_smtp_ports = %u\nlocal_interfaces = 127.0.0.1\n"
		 "never_users =\nhost_lookup =\nrfc1413_hosts =\n"
		 "smtp_accept_queue_per_connection = 0\n"
		 "tls_advertise_hosts = *\ntls_resumption_hosts = *\n"
		 "tls_certificate = %s\ntls_privatekey = %s\n"
		 "pipelining_advertise_hosts = *\n"
		 "log_selector = +tls_cipher +pipelining\n"
		 "acl_smtp_rcpt = acl_rcpt\n"
		 "begin acl\nacl_rcpt:\n  accept\n"
		 "begin routers\nall:\n  driver = accept\n  transport = tofile\n"
		 "begin transports\ntofile:\n  driver = appendfile\n"
		 "  directory = %s/out\n  maildir_format\n  user = Debian-exim\n"
		 "  create_directory\n"
		 "begin retry\n* * F,1h,10m\n",
		 e->dir, e->dir, e->dir, e->port, cert, key, e->dir);
	snprintf(p, sizeof(p), "%s/exim.conf", e->dir);
	t_write_file(p, conf);
	chmod(p, 0644);
	char portarg[16], log[4300];
	snprintf(portarg, sizeof(portarg), "%u", e->port);
	snprintf(log, sizeof(log), "%s/daemon.out", e->dir);
	/* -bdf: the daemon stays in the foreground, so stopping the pid
	   spawned stops it (with -oX, Exim writes no pid file: a forked
	   -bd daemon outlived the tests) */
	const char *argv[] = {"/usr/sbin/exim4", "-C", p, "-bdf", "-oX", portarg, NULL};
	e->pid = ts_spawn(argv, NULL, log);
	if (e->pid <= 0 || ts_wait_port("127.0.0.1", e->port, 10000) != 0)
		return -1;
	return 0;
}

static void exim_stop(struct exim *e)
{
	char pidf[4300];
	snprintf(pidf, sizeof(pidf), "%s/spool/exim.pid", e->dir);
	char *s = t_read_file(pidf, NULL);
	pid_t daemon = s ? (pid_t)atol(s) : 0;
	free(s);
	ts_stop(e->pid);
	if (daemon > 0)
		kill(daemon, SIGTERM);
}

static int count_files(const char *dir)
{
	DIR *d = opendir(dir);
	int n = 0;
	struct dirent *de;
	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static void test_exim_starttls(void)
{
	const char *dir = t_tmpdir();
	struct exim e;
	CU_ASSERT_FATAL(exim_start(&e, dir) == 0);

	char extra[16384], hosts[4300];
	snprintf(hosts, sizeof(hosts), "%s/hosts", dir);
	t_write_file(hosts, "127.0.0.1 mx.test\n");
	snprintf(extra, sizeof(extra),
		 "hosts_file = %s\nroute * = mx.test:%u\n"
		 "tls_verify_certificates = %s/cert.pem\n"
		 "hosts_require_tls = *\nbatch_max = 0\n",
		 hosts, e.port, e.dir);
	const char *conf = mk_conf(dir, extra);
	CU_ASSERT_EQUAL_FATAL(submit_n(conf, 20, 3, 1), 20);

	struct t_out o = {0};
	CU_ASSERT_EQUAL(run_qrun(conf, "1", &o), 0);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_EQUAL(json_field(o.out, "delivered"), 20);
	/* one connection, one TLS handshake for the whole batch */
	CU_ASSERT_EQUAL(json_field(o.out, "connections"), 1);
	CU_ASSERT_EQUAL(json_field(o.out, "tls"), 1);
	if (json_field(o.out, "delivered") != 20)
		fprintf(stderr, "qrun said: %s %s\n", o.out, o.err);
	t_out_free(&o);
	CU_ASSERT_EQUAL(queue_count(conf), 0);

	char p[4300];
	snprintf(p, sizeof(p), "%s/spool/mainlog", e.dir);
	/* Exim delivers each message to its maildir after accepting it, in a
	   process of its own: wait for all 20 (bounded: 60 s) */
	for (int i = 0; i < 600 && ts_count(p, "Completed") < 20; i++)
		usleep(100000);
	/* Exim logged every arrival as TLS, and stored every message */
	CU_ASSERT_EQUAL(ts_count(p, " <= "), 20);
	CU_ASSERT_EQUAL(ts_count(p, "X=TLS"), 20);
	snprintf(p, sizeof(p), "%s/out/new", e.dir);
	CU_ASSERT_EQUAL(count_files(p), 20);

	/* a later run resumes the TLS session of the first (kept in
	   spool/db/tls-sessions): Exim speaks GnuTLS, we OpenSSL */
	CU_ASSERT_EQUAL_FATAL(submit_n(conf, 2, 1, 1), 2);
	CU_ASSERT_EQUAL(run_qrun(conf, "1", &o), 0);
	CU_ASSERT_EQUAL(json_field(o.out, "delivered"), 2);
	CU_ASSERT_EQUAL(json_field(o.out, "tls"), 1);
	CU_ASSERT_EQUAL(json_field(o.out, "tls_resumed"), 1);
	t_out_free(&o);
	exim_stop(&e);
}

static void test_exim_verify_fails(void)
{
	const char *dir = t_tmpdir();
	struct exim e;
	CU_ASSERT_FATAL(exim_start(&e, dir) == 0);
	/* the certificate names mx.test; we connect by another name */
	char extra[16384], hosts[4300];
	snprintf(hosts, sizeof(hosts), "%s/hosts", dir);
	t_write_file(hosts, "127.0.0.1 other.test\n");
	snprintf(extra, sizeof(extra),
		 "hosts_file = %s\nroute * = other.test:%u\n"
		 "tls_verify_certificates = %s/cert.pem\n",
		 hosts, e.port, e.dir);
	const char *conf = mk_conf(dir, extra);
	CU_ASSERT_EQUAL_FATAL(submit_n(conf, 2, 1, 1), 2);
	struct t_out o = {0};
	CU_ASSERT_EQUAL(run_qrun(conf, "1", &o), 0);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_EQUAL(json_field(o.out, "delivered"), 0);
	CU_ASSERT_EQUAL(json_field(o.out, "deferred"), 2);
	t_out_free(&o);
	CU_ASSERT_EQUAL(queue_count(conf), 2);
	/* the IP has a retry record naming the TLS failure */
	const char *argv[] = {t_bin("qctl"), "-C", conf, "retry", NULL};
	CU_ASSERT_EQUAL(t_run(argv, NULL, &o), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out ? o.out : "", "T:other.test:127.0.0.1:"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out ? o.out : "", "tls_required"));
	t_out_free(&o);
	char p[4300];
	snprintf(p, sizeof(p), "%s/spool/mainlog", e.dir);
	CU_ASSERT_EQUAL(ts_count(p, " <= "), 0);
	exim_stop(&e);
}

void suite_peers(void)
{
	CU_pSuite s = CU_add_suite("peers", NULL, NULL);
	CU_add_test(s, "qrun into Postfix smtp-sink: 300 messages, 10 domains", test_smtp_sink);
	CU_add_test(s, "qrun into Exim with STARTTLS: one handshake for 20 messages, resumed by the next run",
		    test_exim_starttls);
	CU_add_test(s, "qrun to Exim with a certificate for another name: deferred",
		    test_exim_verify_fails);
}
