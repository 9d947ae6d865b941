/*
 * q/common.h - conventions shared by every libq module.
 *
 * Return values: 0 (Q_OK) is success; -1 (Q_ERR) is a failure whose text
 * is stored through `const char **error_r`; documented positive values
 * (Q_NOTFOUND, Q_BUSY, ...) are outcomes, not failures.
 *
 * Error texts live in a per-thread buffer: the pointer stored in *error_r
 * stays valid until the next libq call made by the same thread. Copy it
 * if it must live longer. error_r may be NULL when the caller does not
 * want the text.
 *
 * libq never exits and never aborts on ENOMEM or I/O errors; broken
 * invariants (caller bugs) are asserts.
 */
#ifndef Q_COMMON_H
#define Q_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <time.h>

#define Q_API __attribute__((visibility("default")))

#define Q_OK        0
#define Q_ERR      (-1)
#define Q_NOTFOUND  1   /* the thing asked for does not exist */
#define Q_BUSY      2   /* locked by another process: nothing was changed */

/* Library version string, e.g. "0.1.0". */
Q_API const char *q_version(void);

#endif
