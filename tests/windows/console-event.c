/* Test scaffolding, never shipped: sends a console control event (Ctrl-C
 * or Ctrl-Break) to the running Windows program NAME, the way its console
 * does when the user presses the keys: attach to that program's console,
 * ignore the event here, and generate it for the processes on it.
 *
 *   console-event.exe c|break NAME.exe                                   */
#include <windows.h>
#include <tlhelp32.h>
#include <stdio.h>
#include <string.h>

static DWORD find(const char *name) {
    HANDLE snapshot = CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0);
    PROCESSENTRY32 entry = {.dwSize = sizeof entry};
    DWORD pid = 0;
    for (BOOL more = Process32First(snapshot, &entry); more; more = Process32Next(snapshot, &entry)) {
        if (_stricmp(entry.szExeFile, name) == 0) {
            pid = entry.th32ProcessID;
        }
    }
    CloseHandle(snapshot);
    return pid;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: console-event.exe c|break NAME.exe\n");
        return 2;
    }
    DWORD event = strcmp(argv[1], "break") == 0 ? CTRL_BREAK_EVENT : CTRL_C_EVENT;
    DWORD pid = find(argv[2]);
    if (pid == 0) {
        fprintf(stderr, "no process named %s\n", argv[2]);
        return 1;
    }
    FreeConsole();
    if (!AttachConsole(pid)) {
        fprintf(stderr, "AttachConsole(%lu) failed: %lu\n", pid, GetLastError());
        return 1;
    }
    SetConsoleCtrlHandler(NULL, TRUE);
    if (!GenerateConsoleCtrlEvent(event, 0)) {
        fprintf(stderr, "GenerateConsoleCtrlEvent failed: %lu\n", GetLastError());
        return 1;
    }
    return 0;
}
