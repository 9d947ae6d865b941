/*
 * tests/fuzz/fuzz_envelope.c - the envelope (-H) parser of
 * libq/q_spool.c: in memory through q_spool_env_parse (q_spool-private.h)
 * for every input, and through q_spool_read and q_msg_lock for some.
 *
 * Input: a -H file. When its second line is "id ID" with a valid
 * message id, the files are named after that id (so real -H files are
 * seeds as they are); otherwise after a fixed id, which the parser then
 * refuses ("id does not match the file name"). An input of even length
 * gets an empty -J beside it (as q_spool_create makes), an odd one none.
 * What is checked is in spool.c: never a crash or a leak, the parsed
 * envelope is sane and survives encode+parse unchanged, read and lock
 * agree with the in-memory parse, garbled files are moved aside, and
 * libq's own rewrite of -H reads back unchanged.
 */
#include "config.h"
#include "q/spool.h"
#include "fuzz.h"
#include "spool.h"

#include <string.h>

#define FIXED_ID "1Ynq4Z-3d0K-00Fz"

static void input_id(const uint8_t *d, size_t n, char id[Q_ID_LEN + 1])
{
	const uint8_t *nl = memchr(d, '\n', n);

	memcpy(id, FIXED_ID, Q_ID_LEN + 1);
	if (nl == NULL)
		return;
	nl++;
	if ((size_t)(d + n - nl) < 3 + Q_ID_LEN + 1 || memcmp(nl, "id ", 3) != 0 ||
	    nl[3 + Q_ID_LEN] != '\n')
		return;
	memcpy(id, nl + 3, Q_ID_LEN);
	id[Q_ID_LEN] = '\0';
	if (!q_id_valid(id))
		memcpy(id, FIXED_ID, Q_ID_LEN + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char id[Q_ID_LEN + 1];
	struct q_env *env;

	if (!q_id_valid(FIXED_ID))
		fz_harness_fail("FIXED_ID is not a valid id");
	input_id(data, size, id);
	env = fz_env_run(id, data, size, "", 0, (size & 1) == 0);
	q_env_free(&env);
	return 0;
}
