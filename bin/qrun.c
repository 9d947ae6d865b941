/*
 * qrun - the delivery runner: one queue run (from cron), or a daemon that
 * starts a run every interval. The engine is q_run() in libq (q_runner.c);
 * this file is options, signals and reporting.
 *
 * Exit status: 0 when the run completed (deferrals are normal, and so is
 * a run skipped because queue_run_max runs are going); 64 usage; 78
 * configuration; 66/74/77 spool or hints unusable at start; 75 when the
 * run itself could not work (hints, journal; see qrun(8)). A daemon (-d)
 * logs a run that could not work and tries again at the next interval;
 * it exits 0 on SIGTERM.
 */
#include "config.h"
#include "cli.h"
#include "q/conf.h"
#include "q/spool.h"
#include "q/runner.h"
#include "q/log.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got_term, got_hup;
static volatile int stop_flag;

static void usage(FILE *f)
{
	fputs("Usage: qrun [-C FILE] [-v] [-q] [-f|-ff] [-M ID...] [-R DOMAIN] [-P N]\n"
	      "            [-d -i INTERVAL] [--json]\n"
	      "\n"
	      "One queue run: every due message gets a delivery attempt, messages\n"
	      "for one host share connections (and their TLS session).\n"
	      "\n"
	      "  -C FILE      configuration file (else $QKIT_CONFIG, else " SYSCONFDIR "/qkit.conf)\n"
	      "  -v           say what happens, and a summary at the end\n"
	      "  -q           quiet (the default; accepted for crontab lines)\n"
	      "  -f           ignore retry times;  -ff  also thaw frozen messages\n"
	      "  -M ID...     deliver these messages now (ids follow the options)\n"
	      "  -R DOMAIN    only messages with a recipient in DOMAIN (forced)\n"
	      "  -P N         up to N deliveries in parallel (remote_max_parallel)\n"
	      "  -d           daemon: stay up, start a run every -i INTERVAL (default 5m);\n"
	      "               SIGTERM finishes the connections in flight and exits,\n"
	      "               SIGHUP re-reads the configuration\n"
	      "  --json       print the run's summary as JSON on stdout\n"
	      "  --help, --version\n"
	      "\n"
	      "Exit status: 0 run completed (deferrals are normal; a run skipped\n"
	      "because queue_run_max runs are going is not an error), 64 usage,\n"
	      "78 configuration error, 66/74/77 spool or hints unusable.\n",
	      f);
}

static void on_term(int sig)
{
	(void)sig;
	got_term = 1;
	stop_flag = 1;
}

static void on_hup(int sig)
{
	(void)sig;
	got_hup = 1;
}

static void print_summary(const struct q_run_stats *st, bool json, bool verbose)
{
	if (json) {
		cli_json_open('{');
		cli_json_kint("messages", (long long)st->messages);
		cli_json_kint("completed", (long long)st->completed);
		cli_json_kint("delivered", (long long)st->delivered);
		cli_json_kint("deferred", (long long)st->deferred);
		cli_json_kint("failed", (long long)st->failed);
		cli_json_kint("bounces", (long long)st->bounces);
		cli_json_kint("connections", (long long)st->connections);
		cli_json_kint("tls", (long long)st->tls);
		cli_json_kint("tls_resumed", (long long)st->tls_resumed);
		cli_json_kint("busy", (long long)st->skipped_busy);
		cli_json_key("seconds");
		cli_printf("%.3f", st->seconds);
		cli_json_close('}');
		cli_putc('\n');
	} else if (verbose) {
		cli_printf("qrun: %zu messages (%zu completed), %zu delivered, %zu deferred, "
			   "%zu failed, %zu bounces; %zu connections, %zu TLS (%zu resumed); "
			   "%zu busy; %.2f s\n",
			   st->messages, st->completed, st->delivered, st->deferred,
			   st->failed, st->bounces, st->connections, st->tls,
			   st->tls_resumed, st->skipped_busy, st->seconds);
	}
	cli_flush();
}

/* One run. Returns 0 (done or skipped) or the exit code of a failure. */
static int one_run(struct q_run_opts *o, bool json, bool verbose)
{
	struct q_run_stats st;
	const char *err = NULL;
	int ret = q_run(cli.spool, cli.conf, o, &st, &err);
	if (ret == Q_BUSY) {
		/* not an error: cron starts runs that overlap; one line (on
		   stderr with -v or --json, always in the main log) */
		if (verbose || json)
			cli_warn("%u queue runs already in progress (queue_run_max); "
				 "not starting another", cli.conf->queue_run_max);
		q_log("queue run not started: %u runs already in progress "
		      "(queue_run_max)", cli.conf->queue_run_max);
		return 0;
	}
	if (ret < 0) {
		cli_warn("%s", err);
		q_log("queue run failed: %s", err);
		return EX_TEMPFAIL;
	}
	print_summary(&st, json, verbose);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{"json", no_argument, NULL, 'j'},
		{"config", required_argument, NULL, 'C'},
		{NULL, 0, NULL, 0},
	};
	struct q_run_opts o;
	bool verbose = false, json = false, daemon_mode = false, have_M = false;
	long long interval = 300;
	int forces = 0, c;

	memset(&o, 0, sizeof(o));
	cli_start("qrun", 1, argv, usage);
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+C:vqfMR:P:di:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'C': cli.conf_arg = optarg; break;
		case 'v': verbose = true; break;
		case 'q': break;
		case 'f': forces++; break;
		case 'M': have_M = true; break;
		case 'R': o.domain = optarg; break;
		case 'P': {
			char *end;
			long n = strtol(optarg, &end, 10);
			if (*end || n < 1 || n > 256)
				cli_usage_error("-P needs a number from 1 to 256");
			o.parallel = (unsigned)n;
			break;
		}
		case 'd': daemon_mode = true; break;
		case 'i': interval = cli_time_arg("-i", optarg); break;
		case 'j': json = true; break;
		case 'h': usage(stdout); return cli_end(EX_OK);
		case 'V': printf("qrun (qkit) %s\n", PACKAGE_VERSION); return cli_end(EX_OK);
		default:
			cli_usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (have_M) {
		if (optind >= argc)
			cli_usage_error("-M needs message ids");
		for (int i = optind; i < argc; i++)
			if (!q_id_valid(argv[i]))
				cli_usage_error("'%s' is not a message id", argv[i]);
		o.ids = (const char *const *)&argv[optind];
		o.nids = (size_t)(argc - optind);
		o.no_run_lock = true;
	} else if (optind < argc) {
		cli_usage_error("unexpected argument '%s'", argv[optind]);
	}
	if (interval <= 0)
		cli_usage_error("-i needs a positive interval");
	o.force = forces >= 1 || o.domain != NULL;
	o.thaw = forces >= 2;
	o.verbose = verbose ? stdout : NULL;
	o.stop = &stop_flag;

	cli_conf();
	cli_spool(true);
	const char *err = NULL;
	if (q_log_open(q_spool_dir(cli.spool), false, &err) < 0)
		cli_warn("main log: %s", err);
	signal(SIGPIPE, SIG_IGN);

	if (!daemon_mode)
		return cli_end(one_run(&o, json, verbose));

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_hup;
	sigaction(SIGHUP, &sa, NULL);
	q_log("qrun daemon started, pid %ld, interval %llds", (long)getpid(), interval);
	while (!got_term) {
		int ret = one_run(&o, json, verbose);
		if (ret != 0)
			q_log("queue run could not work; trying again in %llds", interval);
		struct timespec until;
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += interval;
		while (!got_term && !got_hup) {
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			if (now.tv_sec >= until.tv_sec)
				break;
			struct timespec nap = {.tv_sec = 1, .tv_nsec = 0};
			nanosleep(&nap, NULL);
		}
		if (got_hup) {
			got_hup = 0;
			struct q_conf *nc = NULL;
			if (q_conf_load(q_conf_locate(cli.conf_arg), &nc, &err) < 0) {
				cli_warn("SIGHUP: %s (keeping the old configuration)", err);
				q_log("SIGHUP: %s (keeping the old configuration)", err);
			} else {
				q_conf_free(&cli.conf);
				cli.conf = nc;
				q_log("SIGHUP: configuration re-read");
			}
		}
	}
	q_log("qrun daemon stopped (SIGTERM)");
	return cli_end(EX_OK);
}
