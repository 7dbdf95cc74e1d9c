/* vhdkit unit tests: a seeded xorshift64 generator, so that a test's
 * "random" data and offsets are the same on every run.  A test may set
 * rng_state to its own seed (never 0).
 */

#ifndef VHDKIT_TESTS_RNG_H
#define VHDKIT_TESTS_RNG_H

#include <stdint.h>

static uint64_t rng_state = UINT64_C (0x9e3779b97f4a7c15);

static inline uint64_t
rnd (void)
{
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

#endif /* VHDKIT_TESTS_RNG_H */
