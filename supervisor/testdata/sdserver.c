/*
 * A server that knows nothing of baton: it takes its socket the systemd
 * way (LISTEN_FDS, checking LISTEN_PID as sd_listen_fds(3) does), says it
 * is ready with systemd-notify, and answers every request with its pid.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_term(int sig) { (void)sig; stop = 1; }

int main(void) {
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	if (!pid || atoi(pid) != (int)getpid()) {
		fprintf(stderr, "sdserver: LISTEN_PID=%s is not my pid %d\n", pid ? pid : "(unset)", (int)getpid());
		return 1;
	}
	if (!fds || atoi(fds) != 1) {
		fprintf(stderr, "sdserver: want LISTEN_FDS=1, have %s\n", fds ? fds : "(unset)");
		return 1;
	}
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	signal(SIGTERM, on_term);
	signal(SIGPIPE, SIG_IGN);
	if (system("systemd-notify --ready --status='serving from C'") != 0) {
		fprintf(stderr, "sdserver: systemd-notify failed\n");
		return 1;
	}
	printf("sdserver: ready\n");
	fflush(stdout);
	while (!stop) {
		struct pollfd p = {.fd = 3, .events = POLLIN};
		if (poll(&p, 1, 100) <= 0)
			continue;
		int c = accept(3, NULL, NULL);
		if (c < 0)
			continue; /* another generation took it */
		char buf[4096];
		if (read(c, buf, sizeof buf) > 0) {
			char body[32], resp[256];
			int n = snprintf(body, sizeof body, "%d", (int)getpid());
			int m = snprintf(resp, sizeof resp,
				"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", n, body);
			if (write(c, resp, m) < 0)
				perror("write");
		}
		close(c);
	}
	printf("sdserver: stopped\n");
	return 0;
}
