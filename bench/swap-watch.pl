#!/usr/bin/perl
# The snapshot swap, seen from outside: for bench/run.sh's swap phase.
#
#   swap-watch.pl SNAPSHOT TIMEOUT_SECONDS WORKER_PID...
#
# controld writes a new snapshot to ".NAME.tmp.PID" beside SNAPSHOT
# (sp_snapshot_publish) and renames it over SNAPSHOT; each worker maps
# the new file, verifies it in steps and then unmaps the old one
# (ngx_http_spendpol_snapshot.c). This polls SNAPSHOT's directory and
# inode every 5 ms, and once the new file is in place each worker's
# /proc/PID/maps every 2 ms: a worker that maps both files is verifying,
# one that maps only the new file has swapped. One line per event on
# stdout, times in seconds since the epoch (bash's EPOCHREALTIME):
#   ready TIME INODE              the file the workers have now
#   writing TIME                  controld is writing a new one
#   published TIME INODE SIZE     it is in place
#   verify TIME PID               PID mapped it (still maps the old one)
#   swapped TIME PID              PID maps only the new file
#   gone TIME PID                 PID exited
#   done TIME                     every worker swapped (or exited)
#   timeout TIME                  TIMEOUT_SECONDS passed before that
use strict;
use warnings;
use File::Basename qw(basename dirname);
use Time::HiRes qw(time sleep);

$| = 1;
my ($snapshot, $timeout, @pids) = @ARGV;
die "usage: $0 SNAPSHOT TIMEOUT_SECONDS WORKER_PID...\n" unless @pids;
my $deadline = time + $timeout;

sub inode { my @st = stat($_[0]); return @st ? ($st[1], $st[7]) : (0, 0) }

# the inodes of SNAPSHOT (also once it is deleted) that PID maps
sub mapped {
    my ($pid) = @_;
    open(my $fh, '<', "/proc/$pid/maps") or return undef;
    my %ino;
    while (my $l = <$fh>) {
        next if index($l, $snapshot) < 0;
        my @f = split ' ', $l;
        $ino{$f[4]} = 1;
    }
    close($fh);
    return \%ino;
}

my ($old) = inode($snapshot);
die "$snapshot does not exist\n" unless $old;
printf "ready %.6f %d\n", time, $old;

my ($dir, $tmp) = (dirname($snapshot), '.' . basename($snapshot) . '.tmp.');
my ($new, $size, $writing);
while (1) {
    if (!$writing && opendir(my $dh, $dir)) {
        $writing = grep { index($_, $tmp) == 0 } readdir($dh);
        closedir($dh);
        printf "writing %.6f\n", time if $writing;
    }
    ($new, $size) = inode($snapshot);
    if ($new && $new != $old) {
        # written between two polls
        printf "writing %.6f\n", time unless $writing;
        last;
    }
    if (time > $deadline) { printf "timeout %.6f\n", time; exit 1 }
    sleep 0.005;
}
printf "published %.6f %d %d\n", time, $new, $size;

my %state = map { $_ => 'old' } @pids;
while (grep { $state{$_} ne 'swapped' && $state{$_} ne 'gone' } @pids) {
    for my $pid (@pids) {
        next if $state{$pid} eq 'swapped' || $state{$pid} eq 'gone';
        my $ino = mapped($pid);
        if (!defined $ino) {
            $state{$pid} = 'gone';
            printf "gone %.6f %d\n", time, $pid;
            next;
        }
        next unless $ino->{$new};
        if ($state{$pid} eq 'old') {
            # a small file can be checked and swapped between two polls
            printf "verify %.6f %d\n", time, $pid;
            $state{$pid} = 'verify';
        }
        if (!$ino->{$old}) {
            printf "swapped %.6f %d\n", time, $pid;
            $state{$pid} = 'swapped';
        }
    }
    if (time > $deadline) { printf "timeout %.6f\n", time; exit 1 }
    sleep 0.002;
}
printf "done %.6f\n", time;
