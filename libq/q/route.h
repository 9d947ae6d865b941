/*
 * q/route.h - routing: a recipient domain to an ordered list of hosts
 * with their IP addresses (issue 3, "Routing, retry and fallback").
 *
 * Order of resolution for a domain:
 *  1. the first `route` line of the configuration that matches the domain
 *     (q_conf_route): its hosts in the order written. A host is an IP
 *     literal, or a name looked up in hosts_file first, then with
 *     getaddrinfo (A and AAAA: every address, in the order returned). The
 *     host `mx` stands for the domain's MX hosts (step 3) at that place.
 *  2. an address literal domain ("[192.0.2.1]", "[IPv6:2001:db8::1]"):
 *     that address.
 *  3. no route: DNS MX (res_nquery on the system resolver). MX hosts are
 *     sorted by preference, equal preferences in random order (RFC 5321
 *     5.1; q_route_seed makes the order reproducible), each name resolved
 *     as in 1 (MX targets that are IP addresses are ignored, as Exim
 *     does). No MX records: the domain's own addresses (implicit MX,
 *     RFC 5321 5.1). A null MX ("." with preference 0, RFC 7505):
 *     permanent failure. Names from the DNS (MX targets, the domain as
 *     implicit MX) not in hosts_file go to getaddrinfo as absolute
 *     names ("name.": no resolver search list, RFC 5321 5.1), and the
 *     loopback or unspecified addresses it gives for them (127.0.0.0/8,
 *     0.0.0.0/8, ::1, ::, also IPv4-mapped) are dropped, as Exim's
 *     ignore_target_hosts does; a host left with none is a permanent
 *     failure ("resolves only to loopback/unspecified addresses").
 *     Route-line names, hosts_file entries and literals are used as
 *     they are.
 * Names under ".invalid" never resolve (RFC 6761 6.4) and are answered
 * at once without a query, so tests behave the same offline and online.
 *
 * Within the result an (ip, port) pair appears once (the first place
 * wins). A host name that does not resolve is left out; when every host
 * is left out, the result is Q_ROUTE_TEMPORARY if any lookup failed
 * temporarily, else Q_ROUTE_PERMANENT.
 *
 * Return values of the resolving functions:
 *   0                   hosts found (out->n >= 1)
 *   Q_ROUTE_TEMPORARY   DNS temporarily failing (SERVFAIL, timeout,
 *                       TRY_AGAIN): defer under retry key R:<domain> with
 *                       kind "lookup"; *error_r says why.
 *   Q_ROUTE_PERMANENT   the domain cannot receive mail (NXDOMAIN, no MX
 *                       and no address records, null MX, MX hosts only
 *                       on loopback/unspecified addresses): bounce;
 *                       *error_r says why.
 *   -1                  a local failure (out of memory, hosts_file not
 *                       readable): not the domain's fault; defer.
 * On anything but 0, out is empty (n == 0, h == NULL).
 *
 * hosts_file is read once and cached (keyed by path, inode, size and
 * modification time; a changed file is read again); the cache is shared
 * by threads under a mutex. Every function here is thread-safe.
 */
#ifndef Q_ROUTE_H
#define Q_ROUTE_H

#include "q/common.h"

struct q_conf;
struct q_hostspec;

#define Q_ROUTE_TEMPORARY 3
#define Q_ROUTE_PERMANENT 4

struct q_host {
	char *name;              /* host name as routed (lower case), or the IP
				    literal as written in a route */
	char *ip;                /* numeric IPv4 or IPv6, no brackets */
	unsigned port;           /* the route's port, else conf->port */
	int mx_pref;             /* MX preference; -1 when not from an MX */
	bool from_mx;            /* from an MX record (Exim's "_MX" errors;
				    implicit MX hosts are "_A") */
};

struct q_hostlist_r {
	size_t n;
	struct q_host *h;        /* n entries, in the order to try them */
	bool by_mx;              /* some hosts came from the domain's MX records */
	bool partial;            /* some names were left out after a temporary
				    lookup failure (worth a log line) */
};

/* Route domain (no trailing dot needed; case-insensitive) with conf's
 * routes, hosts_file and port. out must be zeroed or freed before; the
 * caller frees it with q_route_free. Returns as described above. */
Q_API int q_route_domain(const struct q_conf *conf, const char *domain,
			 struct q_hostlist_r *out, const char **error_r);

/* Resolve conf->fallback_hosts the same way (an `mx` item among them
 * means domain's MX hosts; domain may be NULL when there is none).
 * No fallback hosts configured: Q_ROUTE_PERMANENT with a text. */
Q_API int q_route_fallback(const struct q_conf *conf, const char *domain,
			   struct q_hostlist_r *out, const char **error_r);

/* Resolve an explicit host list (as in a route line) for domain. */
Q_API int q_route_hosts(const struct q_conf *conf,
			const struct q_hostspec *hosts, size_t n,
			const char *domain, struct q_hostlist_r *out,
			const char **error_r);

/* Free the entries and zero *l (safe on a zeroed list). */
Q_API void q_route_free(struct q_hostlist_r *l);

/* Seed the random order of equal MX preferences for the calling thread
 * (tests); without it each thread seeds itself from the clock and pid. */
Q_API void q_route_seed(unsigned long seed);

/* Look name up in an /etc/hosts-format file (cached as above): every
 * address of every line that names it, in file order. *ips_r is a
 * malloc'd array of malloc'd strings (free with q_strv_free from
 * q/addr.h). Returns 0, Q_NOTFOUND (file read, name absent), or -1
 * (file unreadable). */
Q_API int q_hosts_file_lookup(const char *path, const char *name,
			      char ***ips_r, size_t *n_r, const char **error_r);

/* Drop the hosts_file cache (frees its memory; the next lookup reads
 * the file again). */
Q_API void q_route_cache_flush(void);

/* ---- test seam (not exported from libq.so; unit tests link libq
 * statically). Replace the DNS query function (res_nquery-like: fills
 * answer, returns its length or -1 with *herr_r one of HOST_NOT_FOUND,
 * NO_DATA, TRY_AGAIN, NO_RECOVERY from <netdb.h>). NULL restores the
 * system resolver. Process-wide; not for use while other threads route. */
typedef int q_route_query_fn(const char *name, int type, unsigned char *answer,
			     int anslen, int *herr_r);
void q_route_set_query(q_route_query_fn *fn);
/* Replace getaddrinfo for names not in hosts_file: append the addresses
 * of name (numeric strings, malloc'd) to *ips_r / *n_r and return 0, or
 * return a getaddrinfo error (EAI_NONAME: permanent; EAI_AGAIN and the
 * rest: temporary). NULL restores getaddrinfo. Same rules as above. */
typedef int q_route_addr_fn(const char *name, char ***ips_r, size_t *n_r);
void q_route_set_addr(q_route_addr_fn *fn);

#endif
