/*
 * A libiscsi session that stays idle: log in, TEST UNIT READY, then for
 * IDLE seconds send no command at all and only service the socket (this is
 * where libiscsi answers the target's NOP-In pings), then TEST UNIT READY
 * again on the same connection and log out. Automatic reconnection is off,
 * so a target that dropped the idle session makes this fail.
 *
 * usage: idle_session PORTAL TARGET_IQN INITIATOR_IQN IDLE_SECONDS
 * exit 0 and "idle session ok" on success.
 */
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int tur(struct iscsi_context *iscsi, const char *when) {
    struct scsi_task *t = iscsi_testunitready_sync(iscsi, 0);
    if (t == NULL) {
        fprintf(stderr, "TEST UNIT READY %s: %s\n", when, iscsi_get_error(iscsi));
        return -1;
    }
    int status = t->status;
    scsi_free_scsi_task(t);
    /* A unit attention on the first command is fine; the transport worked. */
    if (status != SCSI_STATUS_GOOD && status != SCSI_STATUS_CHECK_CONDITION) {
        fprintf(stderr, "TEST UNIT READY %s: status %d\n", when, status);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s PORTAL TARGET INITIATOR IDLE_SECONDS\n", argv[0]);
        return 2;
    }
    struct iscsi_context *iscsi = iscsi_create_context(argv[3]);
    if (iscsi == NULL) {
        fprintf(stderr, "no context\n");
        return 1;
    }
    iscsi_set_targetname(iscsi, argv[2]);
    iscsi_set_session_type(iscsi, ISCSI_SESSION_NORMAL);
    iscsi_set_header_digest(iscsi, ISCSI_HEADER_DIGEST_NONE);
    iscsi_set_noautoreconnect(iscsi, 1);
    if (iscsi_full_connect_sync(iscsi, argv[1], 0) != 0) {
        fprintf(stderr, "login: %s\n", iscsi_get_error(iscsi));
        return 1;
    }
    if (tur(iscsi, "before idling") != 0) {
        return 1;
    }
    double end = now() + atof(argv[4]);
    while (now() < end) {
        struct pollfd p = {.fd = iscsi_get_fd(iscsi), .events = iscsi_which_events(iscsi)};
        int n = poll(&p, 1, 100);
        if (n < 0) {
            perror("poll");
            return 1;
        }
        if (iscsi_service(iscsi, n > 0 ? p.revents : 0) < 0) {
            fprintf(stderr, "while idle: %s\n", iscsi_get_error(iscsi));
            return 1;
        }
    }
    if (tur(iscsi, "after idling") != 0) {
        return 1;
    }
    if (iscsi_logout_sync(iscsi) != 0) {
        fprintf(stderr, "logout: %s\n", iscsi_get_error(iscsi));
        return 1;
    }
    iscsi_destroy_context(iscsi);
    printf("idle session ok\n");
    return 0;
}
