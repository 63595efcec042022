// RunConfinementSuite's probe for the x86_64 image (built static with gcc): the escapes of issue 22
// that need a system call no busybox applet makes. Each prints one line; the test judges it.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "keyctl")) {   // KEYCTL_GET_KEYRING_ID of the thread keyring
        long rc = syscall(SYS_keyctl, 0, -1, 0, 0, 0);
        printf("keyctl %s\n", rc < 0 ? strerrorname_np(errno) : "allowed");
    } else if (!strcmp(what, "open_by_handle_at")) {
        struct { unsigned int bytes; int type; unsigned char handle[8]; } handle = {8, 1, {0}};
        long rc = syscall(SYS_open_by_handle_at, AT_FDCWD, &handle, O_RDONLY);
        printf("open_by_handle_at %s\n", rc < 0 ? strerrorname_np(errno) : "allowed");
    } else if (!strcmp(what, "name_to_handle_at")) {   // needs no capability: only seccomp refuses it
        struct { unsigned int bytes; int type; unsigned char handle[128]; } handle = {128, 0, {0}};
        int mount_id;
        long rc = syscall(SYS_name_to_handle_at, AT_FDCWD, "/", &handle, &mount_id, 0);
        printf("name_to_handle_at %s\n", rc < 0 ? strerrorname_np(errno) : "allowed");
    } else if (!strcmp(what, "userns")) {   // a new user namespace: by clone, by clone3, by unshare
        long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
        if (pid == 0) _exit(0);
        if (pid > 0) waitpid((pid_t)pid, 0, 0);
        printf("clone-user %s\n", pid < 0 ? strerrorname_np(errno) : "allowed");
        struct clone_args args = {.flags = CLONE_NEWUSER, .exit_signal = SIGCHLD};
        pid = syscall(SYS_clone3, &args, sizeof args);
        if (pid == 0) _exit(0);
        if (pid > 0) waitpid((pid_t)pid, 0, 0);
        printf("clone3-user %s\n", pid < 0 ? strerrorname_np(errno) : "allowed");
        long rc = syscall(SYS_unshare, CLONE_NEWUSER);   // last: a user namespace without a mapping clones no other
        printf("unshare-user %s\n", rc < 0 ? strerrorname_np(errno) : "allowed");
    } else if (!strcmp(what, "chroot-escape") && argc > 2) {   // chroot into a subdirectory, climb out by ..
        mkdir("/escape", 0755);
        if (chroot("/escape") != 0) { printf("chroot-escape chroot %s\n", strerrorname_np(errno)); return 0; }
        for (int i = 0; i < 64; i++) (void)chdir("..");
        (void)chroot(".");
        printf("chroot-escape %s\n", access(argv[2], F_OK) == 0 ? "host-reached" : "contained");
    } else if (!strcmp(what, "tiocsti") && argc > 2) {   // push a command line into the controlling terminal
        char line[4096];
        snprintf(line, sizeof line, "%s\n", argv[2]);
        for (const char *c = line; *c; c++)
            if (ioctl(0, TIOCSTI, c) != 0) { printf("tiocsti %s\n", strerrorname_np(errno)); return 0; }
        printf("tiocsti pushed\n");
    } else if (!strcmp(what, "connect") && argc > 2) {   // TCP to 127.0.0.1:PORT
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int rc = connect(fd, (struct sockaddr *)&address, sizeof address);
        printf("connect %s\n", rc == 0 ? "connected" : strerrorname_np(errno));
    } else {
        fprintf(stderr, "escape-probe: keyctl | open_by_handle_at | name_to_handle_at | userns | chroot-escape PATH | tiocsti TEXT | connect PORT\n");
        return 2;
    }
    return 0;
}
