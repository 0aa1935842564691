/*
 * Two processes sharing one value through shmem.dll, under Wine (.ci/windows.sh): the parent
 * creates and sets it, starts itself as the child (CreateProcess), and the two hand the value
 * back and forth, each sleeping in shmem_wait until the other's set. Then a child that holds
 * the segment is terminated (TerminateProcess): once the parent closes its own handle too,
 * nothing is left (the kernel freed the section with its last handle). Every wait has a
 * deadline; nothing is timed.
 *
 *   two_processes NAME                 the parent
 *   two_processes child NAME           the child of the hand-over
 *   two_processes hold NAME            a child that holds the segment until terminated
 */
#include <stdio.h>
#include <string.h>

#include <windows.h>

#include <shmem.h>

#include "../c/check.h"

enum { DEADLINE_MS = 60000 };

static void check_value(shmem_value *v, const char *want, uint64_t want_version)
{
    char buf[64];
    size_t len = 0;
    uint64_t version = 0;
    CHECK_RC(shmem_get(v, buf, sizeof buf, &len, &version), SHMEM_OK);
    if (len != strlen(want) || memcmp(buf, want, len) != 0 || version != want_version) {
        fprintf(stderr, "read '%.*s' at version %llu, want '%s' at %llu\n", (int)len, buf,
                (unsigned long long)version, want, (unsigned long long)want_version);
        exit(1);
    }
}

static void set_str(shmem_value *v, const char *s)
{
    CHECK_RC(shmem_set(v, s, strlen(s)), SHMEM_OK);
}

/* Starts this program again with `role NAME`. */
static PROCESS_INFORMATION spawn(const char *role, const char *name)
{
    char exe[MAX_PATH];
    CHECK(GetModuleFileNameA(NULL, exe, sizeof exe) > 0);
    char cmd[2 * MAX_PATH];
    snprintf(cmd, sizeof cmd, "\"%s\" %s %s", exe, role, name);
    STARTUPINFOA si;
    memset(&si, 0, sizeof si);
    si.cb = sizeof si;
    PROCESS_INFORMATION pi;
    CHECK(CreateProcessA(NULL, cmd, NULL, NULL, FALSE, 0, NULL, NULL, &si, &pi));
    CloseHandle(pi.hThread);
    return pi;
}

static DWORD reap(HANDLE process)
{
    CHECK(WaitForSingleObject(process, DEADLINE_MS) == WAIT_OBJECT_0);
    DWORD code = 99;
    CHECK(GetExitCodeProcess(process, &code));
    CloseHandle(process);
    return code;
}

static int child(const char *name)
{
    shmem_value *v;
    CHECK_RC(shmem_open(name, 0, 0, &v), SHMEM_OK);
    CHECK_RC(shmem_created(v), 0);
    check_value(v, "from the parent", 1);
    set_str(v, "from the child"); /* version 2 */
    uint64_t seen = 0;
    CHECK_RC(shmem_wait(v, 2, DEADLINE_MS, &seen), SHMEM_OK);
    CHECK(seen == 3);
    check_value(v, "bye", 3);
    shmem_close(v);
    return 0;
}

static int hold(const char *name)
{
    shmem_value *v;
    CHECK_RC(shmem_open(name, 64, SHMEM_CREATE, &v), SHMEM_OK);
    CHECK_RC(shmem_created(v), 1);
    set_str(v, "held");
    Sleep(INFINITE); /* until terminated */
    return 1;
}

int main(int argc, char *argv[])
{
    if (argc == 3 && strcmp(argv[1], "child") == 0)
        return child(argv[2]);
    if (argc == 3 && strcmp(argv[1], "hold") == 0)
        return hold(argv[2]);
    CHECK(argc == 2 && strlen(argv[1]) < 200);
    const char *name = argv[1];

    /* The hand-over. */
    shmem_value *v;
    CHECK_RC(shmem_open(name, 64, SHMEM_CREATE | SHMEM_EXCLUSIVE, &v), SHMEM_OK);
    CHECK_RC(shmem_created(v), 1);
    set_str(v, "from the parent"); /* version 1 */
    PROCESS_INFORMATION pi = spawn("child", name);
    uint64_t seen = 0;
    CHECK_RC(shmem_wait(v, 1, DEADLINE_MS, &seen), SHMEM_OK);
    CHECK(seen == 2);
    check_value(v, "from the child", 2);
    set_str(v, "bye"); /* version 3 */
    CHECK(reap(pi.hProcess) == 0);
    shmem_close(v);
    shmem_value *gone;
    CHECK_RC(shmem_open(name, 0, 0, &gone), SHMEM_ERR_NOT_FOUND);

    /* A holder terminated: the segment goes with the last handle, ours. */
    char held[256];
    snprintf(held, sizeof held, "%s-held", name);
    pi = spawn("hold", held);
    shmem_value *h = NULL;
    for (DWORD waited = 0; shmem_open(held, 0, 0, &h) != SHMEM_OK; waited += 1) {
        CHECK(waited < DEADLINE_MS);
        Sleep(1);
    }
    CHECK_RC(shmem_created(h), 0);
    uint64_t version = 0;
    size_t len = 0;
    char buf[8];
    /* The holder sets "held" right after creating it: wait for that version. */
    CHECK_RC(shmem_get(h, buf, sizeof buf, &len, &version), SHMEM_OK);
    if (version == 0)
        CHECK_RC(shmem_wait(h, 0, DEADLINE_MS, &version), SHMEM_OK);
    check_value(h, "held", 1);
    CHECK(TerminateProcess(pi.hProcess, 9));
    CHECK(reap(pi.hProcess) == 9);
    check_value(h, "held", 1); /* ours keeps it alive */
    shmem_close(h);
    CHECK_RC(shmem_open(held, 0, 0, &gone), SHMEM_ERR_NOT_FOUND);
    printf("ok\n");
    return 0;
}
