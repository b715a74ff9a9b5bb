/*
 * iscsi-load: the iSCSI load generator of `cargo xtask bench iscsi`.
 *
 * One initiator session (libiscsi, async API), one job, a fixed queue depth
 * kept full for a fixed time: READ(16)/WRITE(16), sequential or random,
 * aligned to the request size. The same process drives every target, so the
 * targets are compared under an identical initiator (what fio's libiscsi
 * engine does, without fio). xtask compiles this file with `cc` at bench time.
 *
 * usage: iscsi-load -u iscsi://HOST:PORT/IQN/LUN -m read|write|randread|randwrite|boot
 *                   -b BYTES -q QD -t SECONDS [-i INITIATOR_IQN]
 *
 * boot (`cargo xtask bench storm`): what a booting station does to its
 * disk. Reads of BYTES in runs of 16 sequential requests (a file), each run
 * at a random place; every 8th command is instead a 4 KiB write at a random
 * place in the last sixteenth of the disk (logs, a package cache). The
 * random sequence is seeded by the initiator name, so stations differ.
 * prints one line: key=value ... (ios bytes secs mbps iops lat_avg_us lat_p99_us lat_max_us errors)
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

struct slot {
	unsigned char *buf;
	struct scsi_iovec iov;
	uint64_t t0_ns;
	uint32_t len;
};

static struct iscsi_context *iscsi;
static int lun;
static int do_write, do_random, do_boot;
static uint64_t run_left, submitted;
static uint32_t req_bytes, lba_size, req_blocks;
static uint64_t lun_blocks, next_lba, rng = 0x9e3779b97f4a7c15ull;
static uint64_t ios, bytes, errors, lat_sum_ns, lat_max_ns;
static int inflight, stopping;
static uint32_t *lat_us;
static size_t lat_n, lat_cap;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t xorshift(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void record_latency(uint64_t ns)
{
	if (lat_n == lat_cap) {
		size_t cap = lat_cap ? lat_cap * 2 : 65536;
		uint32_t *p = realloc(lat_us, cap * sizeof(*p));
		if (!p)
			return;
		lat_us = p;
		lat_cap = cap;
	}
	lat_us[lat_n++] = (uint32_t)(ns / 1000);
}

static void submit(struct slot *s);

static void done_cb(struct iscsi_context *ctx, int status, void *command_data, void *private_data)
{
	struct slot *s = private_data;
	struct scsi_task *task = command_data;
	uint64_t lat = now_ns() - s->t0_ns;
	(void)ctx;
	inflight--;
	if (status == SCSI_STATUS_GOOD) {
		ios++;
		bytes += s->len;
		lat_sum_ns += lat;
		if (lat > lat_max_ns)
			lat_max_ns = lat;
		record_latency(lat);
	} else {
		errors++;
		if (errors <= 5)
			fprintf(stderr, "iscsi-load: command failed: status %d: %s\n", status, iscsi_get_error(iscsi));
		if (errors > 100)
			stopping = 1;
	}
	if (task)
		scsi_free_scsi_task(task);
	if (!stopping)
		submit(s);
}

static void submit(struct slot *s)
{
	uint64_t lba;
	struct scsi_task *t;
	int write = do_write;
	s->len = req_bytes;
	if (do_boot) {
		/* Every 8th command a 4 KiB write anywhere; else the next read of a run. */
		if (++submitted % 8 == 0 && lba_size <= 4096) {
			write = 1;
			s->len = 4096;
			/* Writes land in the last sixteenth of the disk (logs, caches). */
			uint64_t per = 4096 / lba_size, area = lun_blocks / 16 / per;
			lba = lun_blocks - (1 + xorshift() % (area ? area : 1)) * per;
		} else {
			if (run_left == 0) {
				next_lba = (xorshift() % (lun_blocks / req_blocks)) * req_blocks;
				run_left = 16;
			}
			run_left--;
			lba = next_lba;
			next_lba += req_blocks;
			if (next_lba + req_blocks > lun_blocks)
				next_lba = 0;
		}
	} else if (do_random) {
		lba = (xorshift() % (lun_blocks / req_blocks)) * req_blocks;
	} else {
		lba = next_lba;
		next_lba += req_blocks;
		if (next_lba + req_blocks > lun_blocks)
			next_lba = 0;
	}
	s->t0_ns = now_ns();
	if (write)
		t = iscsi_write16_task(iscsi, lun, lba, s->buf, s->len, lba_size, 0, 0, 0, 0, 0, done_cb, s);
	else
		t = iscsi_read16_iov_task(iscsi, lun, lba, s->len, lba_size, 0, 0, 0, 0, 0, done_cb, s, &s->iov, 1);
	if (!t) {
		fprintf(stderr, "iscsi-load: cannot queue command: %s\n", iscsi_get_error(iscsi));
		errors++;
		stopping = 1;
		return;
	}
	inflight++;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	const char *url_s = NULL, *mode = "read", *initiator = "iqn.2026-11.dev.sanboot:bench-initiator";
	int qd = 16, secs = 10, opt;
	req_bytes = 1 << 20;
	while ((opt = getopt(argc, argv, "u:m:b:q:t:i:")) != -1) {
		switch (opt) {
		case 'u': url_s = optarg; break;
		case 'm': mode = optarg; break;
		case 'b': req_bytes = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 'q': qd = atoi(optarg); break;
		case 't': secs = atoi(optarg); break;
		case 'i': initiator = optarg; break;
		default: fprintf(stderr, "usage: iscsi-load -u URL -m MODE -b BYTES -q QD -t SECS [-i IQN]\n"); return 2;
		}
	}
	if (!url_s || qd < 1 || qd > 256 || secs < 1 || secs > 600 || req_bytes < 512 || req_bytes > (16u << 20)) {
		fprintf(stderr, "iscsi-load: bad arguments\n");
		return 2;
	}
	do_write = strstr(mode, "write") != NULL;
	do_random = strncmp(mode, "rand", 4) == 0;
	do_boot = strcmp(mode, "boot") == 0;
	for (const char *c = initiator; do_boot && *c; c++)
		rng = (rng ^ (uint64_t)(unsigned char)*c) * 0x100000001b3ull;

	iscsi = iscsi_create_context(initiator);
	if (!iscsi) {
		fprintf(stderr, "iscsi-load: no context\n");
		return 1;
	}
	struct iscsi_url *url = iscsi_parse_full_url(iscsi, url_s);
	if (!url) {
		fprintf(stderr, "iscsi-load: bad url: %s\n", iscsi_get_error(iscsi));
		return 1;
	}
	iscsi_set_targetname(iscsi, url->target);
	iscsi_set_session_type(iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(iscsi, ISCSI_HEADER_DIGEST_NONE);
	iscsi_set_noautoreconnect(iscsi, 1);
	if (iscsi_full_connect_sync(iscsi, url->portal, url->lun) != 0) {
		fprintf(stderr, "iscsi-load: login failed: %s\n", iscsi_get_error(iscsi));
		return 1;
	}
	lun = url->lun;

	struct scsi_task *rc = iscsi_readcapacity16_sync(iscsi, lun);
	struct scsi_readcapacity16 *cap = rc && rc->status == SCSI_STATUS_GOOD ? scsi_datain_unmarshall(rc) : NULL;
	if (!cap) {
		fprintf(stderr, "iscsi-load: READ CAPACITY(16) failed: %s\n", iscsi_get_error(iscsi));
		return 1;
	}
	lba_size = cap->block_length;
	lun_blocks = cap->returned_lba + 1;
	scsi_free_scsi_task(rc);
	if (lba_size == 0 || req_bytes % lba_size) {
		fprintf(stderr, "iscsi-load: request size %u is not a multiple of the block size %u\n", req_bytes, lba_size);
		return 1;
	}
	req_blocks = req_bytes / lba_size;
	if (lun_blocks < req_blocks) {
		fprintf(stderr, "iscsi-load: LUN too small\n");
		return 1;
	}

	struct slot *slots = calloc((size_t)qd, sizeof(*slots));
	if (!slots)
		return 1;
	for (int i = 0; i < qd; i++) {
		slots[i].buf = malloc(req_bytes);
		if (!slots[i].buf)
			return 1;
		for (uint32_t j = 0; j < req_bytes; j += 8) {
			uint64_t v = xorshift();
			memcpy(slots[i].buf + j, &v, req_bytes - j < 8 ? req_bytes - j : 8);
		}
		slots[i].iov.iov_base = slots[i].buf;
		slots[i].iov.iov_len = req_bytes;
	}

	uint64_t start = now_ns(), end = start + (uint64_t)secs * 1000000000ull;
	uint64_t hard_end = end + 30ull * 1000000000ull, last = start;
	for (int i = 0; i < qd && !stopping; i++)
		submit(&slots[i]);
	while (inflight > 0) {
		uint64_t t = now_ns();
		if (t >= end)
			stopping = 1;
		if (t >= hard_end) {
			fprintf(stderr, "iscsi-load: %d commands still in flight 30 s after the end\n", inflight);
			errors += (uint64_t)inflight;
			break;
		}
		struct pollfd pfd = { .fd = iscsi_get_fd(iscsi), .events = (short)iscsi_which_events(iscsi) };
		int r = poll(&pfd, 1, 100);
		if (r < 0 && errno != EINTR) {
			perror("poll");
			break;
		}
		if (iscsi_service(iscsi, r > 0 ? pfd.revents : 0) < 0) {
			fprintf(stderr, "iscsi-load: connection failed: %s\n", iscsi_get_error(iscsi));
			errors++;
			break;
		}
		last = now_ns();
	}
	double elapsed = (double)(last - start) / 1e9;
	uint64_t p99 = 0;
	if (lat_n) {
		qsort(lat_us, lat_n, sizeof(*lat_us), cmp_u32);
		p99 = lat_us[(lat_n * 99) / 100 < lat_n ? (lat_n * 99) / 100 : lat_n - 1];
	}
	printf("ios=%" PRIu64 " bytes=%" PRIu64 " secs=%.3f mbps=%.1f iops=%.0f lat_avg_us=%.1f lat_p99_us=%" PRIu64
	       " lat_max_us=%.0f errors=%" PRIu64 " lba_size=%u lun_blocks=%" PRIu64 "\n",
	       ios, bytes, elapsed, elapsed > 0 ? (double)bytes / 1e6 / elapsed : 0.0,
	       elapsed > 0 ? (double)ios / elapsed : 0.0, ios ? (double)lat_sum_ns / (double)ios / 1000.0 : 0.0,
	       p99, (double)lat_max_ns / 1000.0, errors, lba_size, lun_blocks);
	fflush(stdout);
	if (errors == 0)
		iscsi_logout_sync(iscsi);
	iscsi_destroy_context(iscsi);
	return errors ? 1 : 0;
}
