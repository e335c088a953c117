/*
 * berth-init: the minimal init of `berth run --init`.
 *
 * Usage: berth-init [--] COMMAND [ARG...]
 *
 * Runs as pid 1 of the container. It starts COMMAND as its only child, in a
 * process group of its own (the terminal's foreground group when stdin is
 * one), forwards TERM, INT, HUP, QUIT, USR1, USR2 and WINCH to that group,
 * reaps every process that ends up as its child (orphans reparent to pid 1),
 * and exits with COMMAND's exit code, or 128+N when signal N killed it.
 *
 * Built static (`-static -Os -s`) by crates/engine/build.rs, so it runs in
 * any image, with or without a libc of its own.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

static void say(const char *a, const char *b, const char *c)
{
	const char *parts[] = {"berth-init: ", a, b, c, "\n"};
	for (unsigned i = 0; i < sizeof parts / sizeof parts[0]; i++)
		if (parts[i] && write(2, parts[i], strlen(parts[i])) < 0)
			return;
}

int main(int argc, char **argv)
{
	int first = 1;
	if (argc > 1 && strcmp(argv[1], "--") == 0)
		first = 2;
	if (first >= argc) {
		say("usage: berth-init [--] COMMAND [ARG...]", NULL, NULL);
		return 125;
	}

	/* Everything we wait for is blocked, so no signal is lost before
	 * sigwaitinfo, and pid 1 gets them even without handlers. */
	sigset_t waited, original;
	sigemptyset(&waited);
	sigaddset(&waited, SIGCHLD);
	for (unsigned i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
		sigaddset(&waited, forwarded[i]);
	if (sigprocmask(SIG_BLOCK, &waited, &original) < 0) {
		say("sigprocmask: ", strerror(errno), NULL);
		return 125;
	}

	pid_t child = fork();
	if (child < 0) {
		say("fork: ", strerror(errno), NULL);
		return 125;
	}
	if (child == 0) {
		/* A group of its own, in the terminal's foreground if there is one
		 * (SIGTTOU ignored: we are a background group until tcsetpgrp). */
		signal(SIGTTOU, SIG_IGN);
		if (setpgid(0, 0) == 0 && isatty(STDIN_FILENO))
			(void)tcsetpgrp(STDIN_FILENO, getpgrp());
		signal(SIGTTOU, SIG_DFL);
		sigprocmask(SIG_SETMASK, &original, NULL);
		execvp(argv[first], argv + first);
		int err = errno;
		say(argv[first], ": ", strerror(err));
		_exit(err == ENOENT || err == ENOTDIR ? 127 : 126);
	}
	/* Also from here, in case the signal comes before the child ran. */
	(void)setpgid(child, child);

	for (;;) {
		siginfo_t info;
		int sig = sigwaitinfo(&waited, &info);
		if (sig < 0) {
			if (errno == EINTR)
				continue;
			say("sigwaitinfo: ", strerror(errno), NULL);
			return 125;
		}
		if (sig != SIGCHLD) {
			/* To the child's group while it leads one, else to the child. */
			if (getpgid(child) == child)
				(void)kill(-child, sig);
			else
				(void)kill(child, sig);
			continue;
		}
		/* Reap every child that ended: ours and adopted orphans. */
		for (;;) {
			int status;
			pid_t pid = waitpid(-1, &status, WNOHANG);
			if (pid <= 0)
				break;
			if (pid != child)
				continue;
			if (WIFEXITED(status))
				return WEXITSTATUS(status);
			if (WIFSIGNALED(status))
				return 128 + WTERMSIG(status);
		}
	}
}
