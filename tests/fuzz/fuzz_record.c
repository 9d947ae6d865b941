/*
 * tests/fuzz/fuzz_record.c - the hints record decoders: q_retry_rec_decode
 * (libq/q_retry.c), q_index_rec_decode (q_index.c), q_slot_decode
 * (q_serialize.c), q_session_decode (q_session.c), and the functions
 * that use what they return.
 *
 * Input: byte 0 selects the decoder (0 retry, 1 index, 2 slot, 3
 * session, modulo 4); the rest is the record value as stored in the
 * database (version byte first). A record comes from a file on disk
 * that may be damaged, so anything may arrive. Checked:
 *  - never a crash, a leak, a read past the value or undefined
 *    behaviour; a refusal has a text and leaves nothing allocated;
 *  - retry and index records (whose encoders are public): a record that
 *    decodes encodes back to exactly the same bytes; decoding into a
 *    struct that holds an earlier record frees the earlier text;
 *  - fixed-size fields are NUL-terminated (kind, boot_id), an index
 *    record has a valid id and npending <= nrcpt, optional session
 *    strings are NULL rather than empty;
 *  - the users of decoded records run on them: q_retry_due,
 *    q_retry_host_use, q_retry_try_after_cutoff and q_retry_compute
 *    (as q_retry_fail does with the stored record), q_slot_stale (as
 *    q_serialize_take and q_serialize_clean do).
 *
 * Found here: q_retry_compute and q_slot_stale subtracted stored times
 * from now in signed arithmetic (overflow for times near INT64_MIN/MAX);
 * fixed in c019def, inputs in tests/fuzz/regress/record/.
 */
#include "config.h"
#include "q/hints.h"
#include "q/retry.h"
#include "q/spool.h"
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#define NOW ((time_t)1700000000)
#define BOOT "0f0e0d0c-0b0a-0908-0706-050403020100"

static void same_bytes(const struct q_buf *b, const uint8_t *d, size_t n,
		       const char *what)
{
	FZ_CHECK(b->len == n && memcmp(b->data, d, n) == 0,
		 "%s record: decode then encode gives %zu bytes, not the %zu "
		 "read", what, b->len, n);
}

static void retry_rec(const uint8_t *d, size_t n)
{
	struct q_retry_rec r, again;
	struct q_buf b = { 0 };
	const char *err = NULL;

	memset(&r, 0, sizeof(r));
	if (q_retry_rec_decode(d, n, &r, &err) < 0) {
		FZ_CHECK(err != NULL && err[0] != '\0', "error without text");
		FZ_CHECK(r.text == NULL, "text left after a refusal");
		return;
	}
	FZ_CHECK(memchr(r.kind, '\0', sizeof(r.kind)) != NULL, "kind unterminated");
	FZ_CHECK(r.text == NULL || r.text[0] != '\0', "empty text not NULL");
	FZ_CHECK(q_retry_rec_encode(&r, &b) == 0, "encode failed");
	same_bytes(&b, d, n, "retry");
	/* into a struct that holds a record: the old text is freed (leak
	 * detection tells) */
	again = r;
	again.text = r.text != NULL ? strdup(r.text) : strdup("old");
	FZ_CHECK(q_retry_rec_decode(d, n, &again, &err) == 0, "second decode");
	FZ_CHECK(again.first_failed == r.first_failed &&
		 again.next_try == r.next_try, "second decode differs");
	q_retry_rec_clear(&again);

	/* the users, on the stored record */
	(void)q_retry_due(&r, NOW);
	(void)q_retry_host_use(&r, NULL, NOW - 3600, NOW);
	(void)q_retry_host_use(&r, NULL, 0, NOW);
	(void)q_retry_try_after_cutoff(&r, NOW - 86400);
	q_retry_compute(&r, NULL, 0, NOW);
	FZ_CHECK(r.last_try == NOW && r.next_try >= NOW &&
		 r.next_try - NOW <= 86400, "q_retry_compute on a stored record: "
		 "last_try %lld next_try %lld", (long long)r.last_try,
		 (long long)r.next_try);
	q_retry_rec_clear(&r);
	q_buf_free(&b);
}

static void index_rec(const uint8_t *d, size_t n)
{
	struct q_index_rec r;
	struct q_buf b = { 0 };
	const char *err = NULL;

	if (q_index_rec_decode(d, n, &r, &err) < 0) {
		FZ_CHECK(err != NULL && err[0] != '\0', "error without text");
		FZ_CHECK(r.sender == NULL && r.rcpt1 == NULL && r.domains == NULL &&
			 r.rcpts == NULL, "strings left after a refusal");
		return;
	}
	FZ_CHECK(q_id_valid(r.id), "index record with id \"%.17s\"", r.id);
	FZ_CHECK(r.npending <= r.nrcpt, "npending %u > nrcpt %u", r.npending,
		 r.nrcpt);
	FZ_CHECK(q_index_rec_encode(&r, &b) == 0, "encode failed");
	same_bytes(&b, d, n, "index");
	q_index_rec_clear(&r);
	q_buf_free(&b);
}

static void slot_rec(const uint8_t *d, size_t n)
{
	struct q_slot s;
	const char *err = NULL;

	if (q_slot_decode(d, n, &s, &err) < 0) {
		FZ_CHECK(err != NULL && err[0] != '\0', "error without text");
		return;
	}
	FZ_CHECK(memchr(s.boot_id, '\0', sizeof(s.boot_id)) != NULL,
		 "boot_id unterminated");
	/* pid: signal 0 only asks whether it exists */
	(void)q_slot_stale(&s, NOW, BOOT);
	(void)q_slot_stale(&s, NOW, s.boot_id);
}

static void session_rec(const uint8_t *d, size_t n)
{
	struct q_session_rec s;
	const char *err = NULL;

	if (q_session_decode(d, n, &s, &err) < 0) {
		FZ_CHECK(err != NULL && err[0] != '\0', "error without text");
		FZ_CHECK(s.host == NULL && s.ip == NULL && s.tls == NULL &&
			 s.state == NULL && s.msgid == NULL,
			 "strings left after a refusal");
		return;
	}
	FZ_CHECK(memchr(s.boot_id, '\0', sizeof(s.boot_id)) != NULL,
		 "boot_id unterminated");
	FZ_CHECK(s.host != NULL && s.ip != NULL && s.state != NULL,
		 "a required string is NULL");
	FZ_CHECK((s.tls == NULL || s.tls[0] != '\0') &&
		 (s.msgid == NULL || s.msgid[0] != '\0'),
		 "an empty optional string is not NULL");
	q_session_rec_clear(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *d;
	size_t n;

	if (size == 0)
		return 0;
	n = size - 1;
	/* a copy of exactly the value's size: ASan sees a read past it */
	d = malloc(n ? n : 1);
	if (d == NULL)
		fz_harness_fail("out of memory");
	memcpy(d, data + 1, n);
	switch (data[0] % 4) {
	case 0: retry_rec(d, n); break;
	case 1: index_rec(d, n); break;
	case 2: slot_rec(d, n); break;
	case 3: session_rec(d, n); break;
	}
	free(d);
	return 0;
}
