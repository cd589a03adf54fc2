/* The study notes' TCP echo server in C, for Windows: the left column of
 * the lesson's chapter 1, whole, with the notes' mistakes corrected (each
 * correction says so in a comment). A test compiles it with MinGW and
 * runs it under Wine, and checks that chapter 1 quotes it as it is.
 *
 * Visual Studio (a "Developer Command Prompt"):
 *     cl /W4 echo_server.c
 * MinGW-w64:
 *     x86_64-w64-mingw32-gcc -Wall -o echo_server.exe echo_server.c -lws2_32
 *
 * Then run echo_server.exe and connect to port 9000 (the lesson's "Before
 * you start" says with what). */

#include <winsock2.h>
#include <ws2tcpip.h>
#include <stdio.h>
#include <stdlib.h>

/* Visual Studio's linker takes the WinSock library from here; MinGW's
 * from -lws2_32. (No _WINSOCK_DEPRECATED_NO_WARNINGS: this server uses
 * inet_ntop, not the deprecated inet_ntoa.) */
#ifdef _MSC_VER
#pragma comment(lib, "ws2_32")
#endif

#define SERVERPORT 9000
#define BUFSIZE 512

/* The textbook's helpers: a message for the last WinSock error. */
static void err_quit(const char *msg)
{
    fprintf(stderr, "[%s] error %d\n", msg, WSAGetLastError());
    exit(1);
}

static void err_display(const char *msg)
{
    fprintf(stderr, "[%s] error %d\n", msg, WSAGetLastError());
}

/* Correction: send() may take less than it is given (a short write: the
 * send buffer had room for part of it), and the notes drop the rest. This
 * sends all of it, as UNP's writen() does; the guest's check-write loop
 * (send_all in its blocking.rs) is the same idea. */
static int send_all(SOCKET s, const char *buf, int len)
{
    int sent = 0;
    while (sent < len) {
        int n = send(s, buf + sent, len - sent, 0);
        if (n == SOCKET_ERROR)
            return SOCKET_ERROR;
        sent += n;
    }
    return sent;
}

int main(void)
{
    int retval;
    SOCKADDR_IN serveraddr = {0};
    SOCKADDR_IN clientaddr;
    SOCKET client_sock;
    int addrlen;
    char buf[BUFSIZE + 1];
    char addr[INET_ADDRSTRLEN];

    WSADATA wsa;
    if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0)
        return 1;

    serveraddr.sin_family = AF_INET;
    serveraddr.sin_addr.s_addr = htonl(INADDR_ANY);
    serveraddr.sin_port = htons(SERVERPORT);

    SOCKET listen_sock = socket(AF_INET, SOCK_STREAM, 0);
    if (listen_sock == INVALID_SOCKET) err_quit("socket()");

    /* Correction: no other program may bind this port while the server
     * holds it (Windows' SO_REUSEADDR would let one take its clients).
     * Microsoft asks every server to set it. It does not stop this server
     * binding again past its own connections in TIME_WAIT; a connection
     * still open (its client not gone) can hold the port until it ends. */
    BOOL exclusive = TRUE;
    setsockopt(listen_sock, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, (const char *)&exclusive,
               sizeof(exclusive));

    retval = bind(listen_sock, (SOCKADDR*)&serveraddr, sizeof(serveraddr));
    if (retval == SOCKET_ERROR) err_quit("bind()");

    retval = listen(listen_sock, SOMAXCONN);
    if (retval == SOCKET_ERROR) err_quit("listen()");
    printf("[TCP server] listening on port %d\n", SERVERPORT);
    fflush(stdout);

    while (1) {
        addrlen = sizeof(clientaddr);
        client_sock = accept(listen_sock, (SOCKADDR*)&clientaddr, &addrlen);
        if (client_sock == INVALID_SOCKET)
        {
            err_display("accept()");
            /* Correction: the notes break out of the loop here, which
             * stops the server for one client's failure (lesson, section
             * 2); servers carry on with the next client. */
            continue;
        }
        /* Correction: inet_ntop, not the deprecated inet_ntoa. */
        inet_ntop(AF_INET, &clientaddr.sin_addr, addr, sizeof(addr));
        printf("[TCP server] client connected: IP address=%s port=%d\n", addr,
               ntohs(clientaddr.sin_port));
        fflush(stdout);

        while (1) {
            retval = recv(client_sock, buf, BUFSIZE, 0);
            if (retval == SOCKET_ERROR) {
                /* Correction: the notes say "send()" here. */
                err_display("recv()");
                break;
            }
            else if (retval == 0)
                break;

            retval = send_all(client_sock, buf, retval);
            if (retval == SOCKET_ERROR) {
                err_display("send()");
                break;
            }
        }

        closesocket(client_sock);
        printf("[TCP server] client disconnected: IP address=%s port=%d\n", addr,
               ntohs(clientaddr.sin_port));
        fflush(stdout);
    }

    closesocket(listen_sock);
    WSACleanup();
    return 0;
}
