/* Small helpers over the msgpack-c object API. Every accessor tolerates NULL and wrong types,
 * so callers can chain lookups on untrusted replies without checking each step. */
#ifndef BBD_MP_H
#define BBD_MP_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Value of `key` in `map`, or NULL if `map` is not a map or has no such string key. */
const msgpack_object *mp_get(const msgpack_object *map, const char *key);

/* A map value if `o` is a map, else NULL. */
const msgpack_object *mp_map(const msgpack_object *o);

/* True if `o` is a string; sets *p / *n (not NUL-terminated). */
bool mp_str(const msgpack_object *o, const char **p, size_t *n);

/* True if `o` is a string equal to the C string `s`. */
bool mp_str_eq(const msgpack_object *o, const char *s);

/* True if `o` is a non-negative integer. */
bool mp_uint(const msgpack_object *o, uint64_t *out);

/* True if `o` is any finite number (int or float). */
bool mp_number(const msgpack_object *o, double *out);

/* Writes text received from the network, replacing terminal control characters so a peer
 * cannot move the cursor or recolour the screen. */
void mp_print_text(FILE *f, const char *p, size_t n);

/* Prints map[key] if it is a string, else `fallback`. */
void mp_print_field(FILE *f, const msgpack_object *map, const char *key, const char *fallback);

/* Packs a byte range as a msgpack string; returns 0 on success. */
int mp_pack_str(msgpack_packer *pk, const char *p, size_t n);
int mp_pack_cstr(msgpack_packer *pk, const char *s);

/* Decodes one msgpack value from buf[0..n). Rejects input whose containers claim more
 * elements than the bytes left could hold, before msgpack-c allocates room for them. */
bool mp_decode(msgpack_unpacked *u, const char *buf, size_t n);

#endif
