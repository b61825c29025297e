/*
 * fuzz_xff.c - libFuzzer target for rl_client_addr.  The first byte picks
 * the configuration: low 2 bits the trusted hops (0-3), bit 2 trusted
 * networks (10.0.0.0/8 and 2001:db8::/32), bit 3 Forwarded instead of
 * X-Forwarded-For.  The rest is split at '\n' into REMOTE_ADDR and up to
 * seven header values, each copied to its own exact-size buffer so ASan
 * sees any read past a value's length.  Checks the source is in range,
 * that the resolved address formats, and that a garbage value added left
 * of the others changes nothing once the client was found.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_split.h"
#include "rules.h"

#define MAX_VALUES 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rl_cidr nets[2];
	static int nets_ready;
	struct rl_proxy_conf pc;
	char *parts[MAX_VALUES + 1];
	size_t lens[MAX_VALUES + 1], nparts, i;
	struct rl_addr out, out2;
	enum rl_addr_source src, src2;
	char text[64];

	if (size == 0)
		return 0;
	if (!nets_ready) {
		if (rl_cidr_parse("10.0.0.0/8", 10, &nets[0]) < 0
		    || rl_cidr_parse("2001:db8::/32", 13, &nets[1]) < 0)
			abort();
		nets_ready = 1;
	}
	memset(&pc, 0, sizeof pc);
	pc.hops = data[0] & 3;
	if (data[0] & 4) {
		pc.nets = nets;
		pc.nnets = 2;
	}
	pc.forwarded = (data[0] & 8) != 0;

	nparts = fuzz_split(data, size, 1, parts, lens, MAX_VALUES + 1);

	src = rl_client_addr(&pc, parts[0], lens[0],
			     (const char *const *)parts + 1, lens + 1,
			     nparts - 1, &out);
	if (src > RL_ADDR_NONE)
		abort();
	if (src != RL_ADDR_NONE) {
		if (out.family != 4 && out.family != 6)
			abort();
		rl_addr_format(&out, 24, 64, text, sizeof text);
		if (text[0] == '\0')
			abort();
	}

	/* Garbage added as a new leftmost value cannot change a client
	 * found before the walk ran out of entries: the N-th hop, or an
	 * untrusted entry under trusted networks. */
	if (src == RL_ADDR_HEADER) {
		static const char junk[] = "junk\", [::1]:1, 10.0.0.9";
		const char *more[MAX_VALUES + 1];
		size_t more_lens[MAX_VALUES + 1];
		int stopped = pc.nnets == 0
			      || (!rl_cidr_contains(&nets[0], &out)
				  && !rl_cidr_contains(&nets[1], &out));

		more[0] = junk;
		more_lens[0] = sizeof junk - 1;
		for (i = 1; i < nparts; i++) {
			more[i] = parts[i];
			more_lens[i] = lens[i];
		}
		src2 = rl_client_addr(&pc, parts[0], lens[0], more, more_lens,
				      nparts, &out2);
		if (stopped && (src2 != src || out2.family != out.family
				|| memcmp(out2.b, out.b, 16) != 0))
			abort();
	}

	for (i = 0; i < nparts; i++)
		free(parts[i]);
	return 0;
}
