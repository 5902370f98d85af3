//! Command-line output into a pipe whose reader stops early (`merd events | head`): the command
//! ends quietly, as other Unix tools do, instead of panicking in `println!`.

/// Restores SIGPIPE's default action, so that writing to a closed stdout ends the process (status
/// 141 in a shell). Only for commands whose job is printing: a server keeps the runtime's
/// "ignore", so that a peer hanging up is an error on that socket and not the end of the daemon.
pub fn end_quietly_when_stdout_closes() {
    // SAFETY: setting a signal's disposition to its default has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
