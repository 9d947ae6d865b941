/*
 * tests/crash/crashtest.c - the long run of the crash-safety checks
 * (issue 5): `make crash`, or by hand from the top directory:
 *
 *   tests/crash/crashtest [-s SEED] [-n MSGS] [-k KILLS] [-m MAXDELAY_MS]
 *                         [-P N] [-D REPLY_DELAY_MS] [-p PARTS] [-K]
 *                         [--shim PATH] [--no-mount] [-v]
 *
 * PARTS is a string of part numbers (default 1234):
 *   1  qrun killed with SIGKILL while delivering (MSGS messages, KILLS kills)
 *   2  SIGKILL during qctl submit, qhints tidy and qhints rebuild
 *   3  a full disk during submit and during delivery
 *   4  the hints environment deleted or corrupted between runs
 * -K skips the checks of bugs known to fail (marked KNOWN BUG; they run
 * by default, so that `make crash` fails until they are fixed).
 *
 * Prints the seed first (a run is repeated with -s SEED), a line per
 * failed check, and one line of figures per part. Exit status: 0 when
 * every check passed, 1 when one failed, 64 on bad usage.
 * The engine is tests/crash/core.c (shared with make check's
 * suite_crash); see tests/crash/README.
 */
#include "config.h"
#include "tests/crash/core.c"

#include <getopt.h>

static void usage(FILE *f)
{
	fputs("usage: crashtest [-s SEED] [-n MSGS] [-k KILLS] [-m MAXDELAY_MS] [-P N]\n"
	      "                 [-D REPLY_DELAY_MS] [-p PARTS] [-K] [--shim PATH]\n"
	      "                 [--no-mount] [-v]\n"
	      "Run from the top build directory (or set QKIT_TOP).\n", f);
}

static int report(const struct cr_res *r)
{
	if (r->skipped)
		printf("%-12s SKIPPED (%s)\n", r->name, r->nnotes ? r->notes[0] : "");
	else
		printf("%-12s %s  %.1f s  %s\n", r->name,
		       r->fails ? "FAILED" : "ok", r->seconds, r->figs);
	if (r->fails)
		printf("%-12s %d failed checks (%d of them known bugs)%s\n", r->name,
		       r->fails, r->known, r->fails > r->nnotes ? "; the first ones:" : ":");
	for (int i = 0; r->fails && i < r->nnotes; i++)
		printf("    %s\n", r->notes[i]);
	fflush(stdout);
	return r->fails ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct cr_opts o = {
		.msgs = 1000, .kills = 200, .max_delay_ms = 200, .parallel = 4,
		.reply_delay_ms = 10, .submit_kills = 100, .hints_msgs = 3000,
		.hints_kills = 60, .full_steps = 24, .corrupt_msgs = 60,
		.known_bugs = true,
	};
	static const struct option lo[] = {
		{ "shim", required_argument, NULL, 'S' },
		{ "no-mount", no_argument, NULL, 'N' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *parts = "1234";
	bool seeded = false;
	int c, rc = 0;

	while ((c = getopt_long(argc, argv, "s:n:k:m:P:D:p:Kvh", lo, NULL)) != -1) {
		switch (c) {
		case 's': o.seed = strtoull(optarg, NULL, 10); seeded = true; break;
		case 'n': o.msgs = atoi(optarg); break;
		case 'k': o.kills = atoi(optarg); break;
		case 'm': o.max_delay_ms = atoi(optarg); break;
		case 'P': o.parallel = atoi(optarg); break;
		case 'D': o.reply_delay_ms = atoi(optarg); break;
		case 'p': parts = optarg; break;
		case 'K': o.known_bugs = false; break;
		case 'S': o.shim = optarg; break;
		case 'N': o.no_mount = true; break;
		case 'v': o.verbose = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 64;
		}
	}
	if (optind != argc || o.msgs < 1 || o.kills < 0 || o.max_delay_ms < 0 ||
	    o.parallel < 1 || o.reply_delay_ms < 0) {
		usage(stderr);
		return 64;
	}
	if (!seeded) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		o.seed = (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec ^
			 (uint64_t)getpid();
		o.seed %= 1000000000ULL;
	}
	if (o.shim == NULL && access("tests/crash/enospc.so", R_OK) == 0)
		o.shim = "tests/crash/enospc.so";
	cr_log = stdout;
	cr_verbose = o.verbose;
	printf("crashtest: seed %llu (repeat with -s %llu)\n",
	       (unsigned long long)o.seed, (unsigned long long)o.seed);
	fflush(stdout);
	signal(SIGPIPE, SIG_IGN);

	if (strchr(parts, '1')) {
		struct cr_res r = { 0 };

		part_qrun_kills(&o, &r);
		rc |= report(&r);
	}
	if (strchr(parts, '2')) {
		struct cr_res r = { 0 };

		part_submit_kills(&o, &r);
		rc |= report(&r);
		memset(&r, 0, sizeof(r));
		part_hints_kills(&o, &r);
		rc |= report(&r);
	}
	if (strchr(parts, '3')) {
		/* (a) a tmpfs for the spool, db/ on a tmpfs of its own;
		 * (b) everything on one tmpfs (met the SIGBUS bug, fixed);
		 * (c) the ENOSPC shim, when built */
		struct fullfs f = { .shim = o.shim };
		struct cr_res r = { 0 };
		const char *d = o.no_mount ? NULL : t_tmpdir();

		if (d != NULL && fs_mount(&f, d) < 0)
			printf("crashtest: no tmpfs (mount: %s); the shim only\n",
			       strerror(errno));
		if (f.tmpfs) {
			f.split_db = true;
			part_full_submit(&o, &f, &r);
			rc |= report(&r);
			memset(&r, 0, sizeof(r));
			part_full_deliver(&o, &f, &r);
			rc |= report(&r);
			f.split_db = false;
			memset(&r, 0, sizeof(r));
			part_full_submit(&o, &f, &r);
			cr_snpr(r.name, sizeof(r.name), "full-submit1");
			rc |= report(&r);
			memset(&r, 0, sizeof(r));
			part_full_deliver(&o, &f, &r);
			cr_snpr(r.name, sizeof(r.name), "full-deliv1");
			rc |= report(&r);
			memset(&r, 0, sizeof(r));
			part_full_regions(&o, &f, &r);
			rc |= report(&r);
		}
		fs_umount(&f);
		if (o.shim != NULL) {
			memset(&r, 0, sizeof(r));
			part_full_submit(&o, &f, &r);
			cr_snpr(r.name, sizeof(r.name), "full-submitS");
			rc |= report(&r);
			memset(&r, 0, sizeof(r));
			part_full_deliver(&o, &f, &r);
			cr_snpr(r.name, sizeof(r.name), "full-delivS");
			rc |= report(&r);
		} else {
			printf("full-shim    SKIPPED (tests/crash/enospc.so not built: "
			       "make crash-build)\n");
		}
	}
	if (strchr(parts, '4')) {
		struct cr_res r = { 0 };

		part_hints_damage(&o, &r);
		rc |= report(&r);
	}
	printf("crashtest: %s\n", rc ? "FAILED" : "all checks passed");
	return rc;
}
