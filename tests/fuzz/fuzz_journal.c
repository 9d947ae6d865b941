/*
 * tests/fuzz/fuzz_journal.c - the journal (-J) parser of libq/q_spool.c,
 * beside a valid -H: in memory through q_spool_journal_apply
 * (q_spool-private.h) for every input, through q_spool_read and
 * q_msg_lock for some (see spool.c).
 *
 * Input: a -J file. The -H is fixed: four recipients, two pending (one
 * already tried), one delivered, one failed. Checked (besides spool.c's
 * checks: no crash or leak, good length at a line end, encode+parse
 * round trip, read and lock agree with memory, garbled files moved
 * aside, the merge by q_msg_set_frozen round-trips):
 *  - a recipient that -H has as delivered or failed is untouched by any
 *    journal ("final stays final");
 *  - a pending recipient's tries never go down, and go up by at most the
 *    number of journal lines;
 *  - nothing but the recipients changes.
 */
#include "config.h"
#include "q/spool.h"
#include "fuzz.h"
#include "spool.h"

#include <string.h>

#define ID "1Ynq4Z-3d0K-00Fz"

static const char hfile[] =
	"qkit-H 1\n"
	"id " ID "\n"
	"sender fuzz@example.org\n"
	"arrival 1700000000\n"
	"size 23\n"
	"flags 0\n"
	"frozen -\n"
	"rcpts 5\n"
	"rcpt a@example.com P 0 0 0 - -\n"
	"rcpt b@example.net P 2 1700000100 451 mx.example.net "
	"4.7.1\\x20greylisted\n"
	"rcpt c@example.org D 1 1700000050 250 mx.example.org ok\n"
	"rcpt d@example.org F 1 1700000050 550 mx.example.org "
	"5.1.1\\x20unknown\\x20user\n"
	"rcpt e@example.org X 1 1700000060 550 mx.example.org "
	"5.1.1\\x20unknown\\x20user\n"
	"end\n";

static struct q_env *base;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct q_env *env;
	size_t lines = 0;

	if (base == NULL) {
		base = fz_env_run(ID, hfile, sizeof(hfile) - 1, "", 0, true);
		if (base == NULL || base->nrcpt != 5)
			fz_harness_fail("the fixed -H does not parse");
	}
	env = fz_env_run(ID, hfile, sizeof(hfile) - 1, data, size, true);
	if (env == NULL)
		return 0;
	for (size_t i = 0; i < size; i++)
		if (data[i] == '\n')
			lines++;
	FZ_CHECK(strcmp(env->sender, base->sender) == 0 &&
		 env->arrival == base->arrival && env->size == base->size &&
		 env->flags == base->flags && env->frozen_reason == NULL &&
		 env->nrcpt == base->nrcpt, "the journal changed more than "
		 "the recipients");
	for (size_t i = 0; i < env->nrcpt; i++) {
		const struct q_rcpt *b = &base->rcpt[i], *r = &env->rcpt[i];

		FZ_CHECK(strcmp(b->addr, r->addr) == 0, "recipient %zu renamed", i);
		if (b->state != Q_RCPT_PENDING) {
			/* the one change of a final state: X (bounce owed)
			   to F (queued) */
			bool same = r->state == b->state ||
				    (b->state == Q_RCPT_FAILED_OWED &&
				     r->state == Q_RCPT_FAILED);
			FZ_CHECK(same && r->tries == b->tries &&
				 r->last_code == b->last_code &&
				 r->last_time == b->last_time,
				 "final recipient %zu changed by the journal "
				 "(state %c -> %c, code %d -> %d)", i, b->state,
				 r->state, b->last_code, r->last_code);
			continue;
		}
		FZ_CHECK(r->tries >= b->tries && r->tries - b->tries <= lines,
			 "recipient %zu: tries %u -> %u with %zu journal lines",
			 i, b->tries, r->tries, lines);
	}
	q_env_free(&env);
	return 0;
}
