/* A CHECK macro for the test programs: on failure, prints the condition and line and exits 1. */
#ifndef SHMEM_TEST_CHECK_H
#define SHMEM_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);      \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

/* CHECK that a libshmem call returned `want`, naming the code it got instead. */
#define CHECK_RC(call, want)                                                              \
    do {                                                                                  \
        int rc_ = (call);                                                                 \
        if (rc_ != (want)) {                                                              \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %s\n", __FILE__,        \
                    __LINE__, #call, rc_, shmem_strerror(rc_), #want);                    \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

#endif
