# RunConfinementSuite's probe for the armhf image (perl-base is in every Debian): the escapes of issue 22
# that need a system call no shell tool makes, with armhf (EABI) system call numbers. One line each.
# qemu-user answers keyctl itself (ENOSYS) without asking the kernel; name_to_handle_at reaches it.
use strict;
use Errno;
use Socket;
my ($what, $arg) = @ARGV;
sub failed { my $n = $! + 0; for my $k (sort keys %!) { return $k if $!{$k} } return "errno$n" }
if ($what eq "keyctl") {   # KEYCTL_GET_KEYRING_ID of the thread keyring
    my $rc = syscall(311, 0, -1, 0, 0, 0);
    print "keyctl ", ($rc < 0 ? failed() : "allowed"), "\n";
} elsif ($what eq "open_by_handle_at") {
    my $handle = pack("Ll", 8, 1) . ("\0" x 8);
    my $rc = syscall(371, -100, $handle, 0);
    print "open_by_handle_at ", ($rc < 0 ? failed() : "allowed"), "\n";
} elsif ($what eq "name_to_handle_at") {   # needs no capability: only seccomp refuses it
    my $handle = pack("Ll", 128, 0) . ("\0" x 128);
    my ($path, $mount) = ("/", pack("l", 0));   # syscall() wants modifiable buffers
    my $rc = syscall(370, -100, $path, $handle, $mount, 0);
    print "name_to_handle_at ", ($rc < 0 ? failed() : "allowed"), "\n";
} elsif ($what eq "userns") {   # unshare(CLONE_NEWUSER) (qemu-user refuses clone with it by itself: EINVAL)
    my $rc = syscall(337, 0x10000000);
    print "unshare-user ", ($rc < 0 ? failed() : "allowed"), "\n";
} elsif ($what eq "chroot-escape") {   # chroot into a subdirectory, climb out by ..
    mkdir "/escape", 0755;
    chroot "/escape" or do { print "chroot-escape chroot ", failed(), "\n"; exit 0 };
    chdir ".." for 1 .. 64;
    chroot ".";
    print "chroot-escape ", (-e $arg ? "host-reached" : "contained"), "\n";
} elsif ($what eq "tiocsti") {   # push a command into the controlling terminal
    for my $c (split //, "$arg\n") {
        ioctl(STDIN, 0x5412, $c) or do { print "tiocsti ", failed(), "\n"; exit 0 };
    }
    print "tiocsti pushed\n";
} elsif ($what eq "connect") {   # TCP to 127.0.0.1:PORT
    socket(my $s, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
    print "connect ", (connect($s, sockaddr_in($arg, inet_aton("127.0.0.1"))) ? "connected" : failed()), "\n";
} else {
    die "escape-probe.pl: keyctl | open_by_handle_at | name_to_handle_at | userns | chroot-escape PATH | tiocsti TEXT | connect PORT\n";
}
