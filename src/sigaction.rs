//! hatchery's own signal handler, installed with `sigaction` so that it can
//! be taken away again: the one module that uses `unsafe`.
//!
//! # Why not signal-hook
//!
//! signal-hook-registry (under signal-hook, tokio::signal, async-signal…)
//! installs one handler per signal the first time anything registers for it,
//! and keeps it for the life of the process: `unregister` removes an action
//! but leaves the handler installed (its docs say the signal is then
//! ignored), and the registry never installs its handler again for a signal
//! it has seen, so putting the old disposition back underneath it would
//! silently break every later signal-hook user. A `run` that leaves the
//! process as it found it (the previous disposition back, no handler left
//! behind, a handler the program installs later in charge) needs a handler
//! of its own.
//!
//! # The handler
//!
//! It does only async-signal-safe things: atomic loads and stores, `write`
//! to a non-blocking socket, `write` to stderr, `_exit`, and a call of the
//! handler it replaced.
//! In order, it
//!
//! 1. exits at once with the armed status, if one is armed (the signal
//!    after a forced shutdown), after writing one line on stderr (a plain
//!    `write(2)`, which is async-signal-safe);
//! 2. sends one datagram `[signal, generation]` to the watcher listening
//!    now, if one is;
//! 3. calls the handler it replaced, if that was a function (as signal-hook
//!    did): a handler the program installed before `run` keeps seeing its
//!    signals.
//!
//! # Invariants
//!
//! 1. [`install`] and [`Installed`]'s drop are serialized, and each drop
//!    undoes exactly its install.
//! 2. The drop puts back the disposition its install replaced only if
//!    hatchery's handler is still the installed one. If someone installed a
//!    handler over it meanwhile, that handler stays in charge; it may call
//!    hatchery's (signal-hook chains to the handler it replaced), which
//!    then does nothing but call, in turn, what it replaced.
//! 3. The socket the handler writes to is created once and never closed: a
//!    handler that has read its descriptor never writes into a descriptor
//!    reused for something else.
//! 4. The handler does not run itself again through a chain (hatchery's
//!    handler calls one installed before it, which calls hatchery's…): a
//!    thread that finds itself already inside the handler for that signal
//!    returns at once. Another thread's signal is handled as usual, even
//!    while one thread is still inside the handler.
//! 5. A datagram names its signal: whichever order signals arrive in, each
//!    is credited to itself.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::sync::Recover;
use libc::{c_int, c_void, siginfo_t};

/// Signal numbers below this can be handled (Linux numbers them 1 to 64).
const SIGNALS: usize = 65;

/// The byte a stop message carries where a signal message has the signal.
pub(crate) const STOP: u8 = 0;

/// The generation of the watcher listening now; 0: nobody listens.
static LISTENING: AtomicU8 = AtomicU8::new(0);
/// The write end of [`CHANNEL`], once it exists (invariant 3).
static DELIVER_FD: AtomicI32 = AtomicI32::new(-1);
/// The status the handler exits with; 0: not armed.
static EXIT_STATUS: AtomicI32 = AtomicI32::new(0);

/// Per signal, what the handler calls after its own work: the address of the
/// handler it replaced, in the slot of its calling convention. Each slot
/// describes its own convention, so a handler that reads one slot just
/// before an install or a drop rewrites the other calls a real handler the
/// right way, at worst one that has just stopped being current.
static CHAINED_SIGINFO: [AtomicUsize; SIGNALS] = [const { AtomicUsize::new(0) }; SIGNALS];
static CHAINED_PLAIN: [AtomicUsize; SIGNALS] = [const { AtomicUsize::new(0) }; SIGNALS];
/// Per signal, the threads inside the handler now (invariant 4), by
/// `pthread_self`; 0 is a free slot.
static INSIDE: [[AtomicUsize; INSIDE_SLOTS]; SIGNALS] =
    [const { [const { AtomicUsize::new(0) }; INSIDE_SLOTS] }; SIGNALS];
/// Threads inside the handler for one signal at once that are told apart.
/// With more, the extra ones are handled without being marked.
const INSIDE_SLOTS: usize = 4;

/// Invariant 1.
static INSTALL: Mutex<()> = Mutex::new(());

/// The socket pair the handler writes to: (read end, write end).
static CHANNEL: OnceLock<(UnixDatagram, UnixDatagram)> = OnceLock::new();

fn index(signal: c_int) -> Option<usize> {
    usize::try_from(signal)
        .ok()
        .filter(|&index| index < SIGNALS)
}

extern "C" fn handler(signal: c_int, info: *mut siginfo_t, context: *mut c_void) {
    let Some(index) = index(signal) else {
        return;
    };
    let status = EXIT_STATUS.load(Ordering::SeqCst);
    if status != 0 {
        const LINE: &[u8] = b"hatchery: received another signal: exiting now\n";
        // SAFETY: `write` is async-signal-safe; `LINE` is a static buffer
        // of `LINE.len()` bytes. What it returns does not matter: the
        // process exits next.
        unsafe { libc::write(libc::STDERR_FILENO, LINE.as_ptr().cast(), LINE.len()) };
        // SAFETY: `_exit` is async-signal-safe and takes any status.
        unsafe { libc::_exit(status) };
    }
    let Some(slot) = Inside::enter(index) else {
        return;
    };
    let errno = Errno::save();
    let generation = LISTENING.load(Ordering::SeqCst);
    let fd = DELIVER_FD.load(Ordering::SeqCst);
    if generation != 0 && fd >= 0 {
        let message = [u8::try_from(signal).unwrap_or(u8::MAX), generation];
        // SAFETY: `fd` is the write end of CHANNEL, which is never closed
        // (invariant 3); the buffer is a live local array of that length.
        // `write` is async-signal-safe, and the socket is non-blocking: when
        // it is full the message is dropped, the handler never waits.
        unsafe { libc::write(fd, message.as_ptr().cast(), message.len()) };
    }
    chain(index, signal, info, context);
    errno.restore();
    drop(slot);
}

/// This thread's mark inside the handler for one signal (invariant 4).
struct Inside(Option<&'static AtomicUsize>);

impl Inside {
    /// Marks this thread inside; `None` if it was already (a chain led
    /// back to the handler).
    fn enter(index: usize) -> Option<Inside> {
        // SAFETY: `pthread_self` has no preconditions; it reads the thread
        // pointer (glibc, musl, Apple, the BSDs), which is safe in a signal
        // handler.
        let me = unsafe { libc::pthread_self() } as usize;
        let slots = &INSIDE[index];
        if slots.iter().any(|slot| slot.load(Ordering::SeqCst) == me) {
            return None;
        }
        let claimed = slots.iter().find(|slot| {
            slot.compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        Some(Inside(claimed))
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            slot.store(0, Ordering::SeqCst);
        }
    }
}

/// Calls the handler that hatchery's replaced, if it was a function.
fn chain(index: usize, signal: c_int, info: *mut siginfo_t, context: *mut c_void) {
    let siginfo = CHAINED_SIGINFO[index].load(Ordering::SeqCst);
    if siginfo != 0 {
        type Action = extern "C" fn(c_int, *mut siginfo_t, *mut c_void);
        // SAFETY: `install` stores here only the `sa_sigaction` of a
        // disposition that had SA_SIGINFO set and was neither SIG_DFL nor
        // SIG_IGN: the address of a function of exactly this signature,
        // which the kernel would have called with these same arguments.
        let action = unsafe { std::mem::transmute::<*const (), Action>(siginfo as *const ()) };
        action(signal, info, context);
        return;
    }
    let plain = CHAINED_PLAIN[index].load(Ordering::SeqCst);
    if plain != 0 {
        type Handler = extern "C" fn(c_int);
        // SAFETY: as above, for a disposition without SA_SIGINFO: a
        // function that takes the signal number only.
        let handler = unsafe { std::mem::transmute::<*const (), Handler>(plain as *const ()) };
        handler(signal);
    }
}

/// What the handler would chain to: (siginfo-style, plain) addresses.
fn chained(index: usize) -> (usize, usize) {
    (
        CHAINED_SIGINFO[index].load(Ordering::SeqCst),
        CHAINED_PLAIN[index].load(Ordering::SeqCst),
    )
}

fn set_chained(index: usize, (siginfo, plain): (usize, usize)) {
    // Each slot is cleared before the other is set: a handler reading
    // both never finds two handlers of different dispositions at once
    // other than one just replaced and its successor.
    if siginfo == 0 {
        CHAINED_SIGINFO[index].store(0, Ordering::SeqCst);
        CHAINED_PLAIN[index].store(plain, Ordering::SeqCst);
    } else {
        CHAINED_PLAIN[index].store(0, Ordering::SeqCst);
        CHAINED_SIGINFO[index].store(siginfo, Ordering::SeqCst);
    }
}

/// The chain slots for a disposition: a function in the slot of its
/// convention; SIG_DFL and SIG_IGN chain to nothing.
fn chain_of(action: &libc::sigaction) -> (usize, usize) {
    let address = action.sa_sigaction;
    if address == libc::SIG_DFL || address == libc::SIG_IGN {
        (0, 0)
    } else if action.sa_flags & libc::SA_SIGINFO != 0 {
        (address, 0)
    } else {
        (0, address)
    }
}

fn our_address() -> libc::sighandler_t {
    let handler: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) = handler;
    handler as *const () as libc::sighandler_t
}

/// The current disposition of `signal`.
fn current(signal: c_int) -> io::Result<libc::sigaction> {
    // SAFETY: an all-zero sigaction is a valid value of the struct (empty
    // mask, no flags, SIG_DFL); with a null new action, `sigaction` only
    // writes the current one into it.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `action` is a live, writable sigaction.
    if unsafe { libc::sigaction(signal, std::ptr::null(), &mut action) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(action)
}

fn set(signal: c_int, action: &libc::sigaction) -> io::Result<()> {
    // SAFETY: `action` is a complete sigaction: either one the kernel gave
    // us, or ours (whose handler is async-signal-safe, see the module docs).
    if unsafe { libc::sigaction(signal, action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// hatchery's handler, installed for one signal; dropping it puts back what
/// it replaced (invariant 2).
pub(crate) struct Installed {
    signal: c_int,
    index: usize,
    /// The disposition the install replaced; `None` if hatchery's handler
    /// was installed already (nothing to undo).
    replaced: Option<libc::sigaction>,
    /// What the handler chained to before this install.
    chained_before: (usize, usize),
}

/// Installs hatchery's handler for `signal`, unless the signal is ignored
/// (`Ok(None)`: a process started with it ignored keeps it ignored).
pub(crate) fn install(signal: c_int) -> io::Result<Option<Installed>> {
    let index = index(signal).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("signal {signal} out of range"),
        )
    })?;
    let _serial = INSTALL.lock().recover();
    let before = current(signal)?;
    let chained_before = chained(index);
    if before.sa_sigaction == libc::SIG_IGN {
        return Ok(None);
    }
    if before.sa_sigaction == our_address() {
        return Ok(Some(Installed {
            signal,
            index,
            replaced: None,
            chained_before,
        }));
    }
    set_chained(index, chain_of(&before));
    // SAFETY: all-zero is a valid sigaction; every field that matters is
    // set below.
    let mut ours: libc::sigaction = unsafe { std::mem::zeroed() };
    ours.sa_sigaction = our_address();
    // SA_RESTART: other threads' system calls are not cut short by a
    // signal they did not ask for (what signal-hook does too).
    ours.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: `sa_mask` is a live sigset_t of `ours`.
    unsafe { libc::sigemptyset(&mut ours.sa_mask) };
    if let Err(error) = set(signal, &ours) {
        set_chained(index, chained_before);
        return Err(error);
    }
    Ok(Some(Installed {
        signal,
        index,
        replaced: Some(before),
        chained_before,
    }))
}

impl Installed {
    /// Leaves hatchery's handler installed for good (the process is about
    /// to exit).
    pub(crate) fn keep(mut self) {
        self.replaced = None;
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let Some(replaced) = &self.replaced else {
            return;
        };
        let _serial = INSTALL.lock().recover();
        // Invariant 2: someone else's handler on top stays, and ours keeps
        // chaining to what it replaced.
        if current(self.signal).is_ok_and(|now| now.sa_sigaction == our_address())
            && set(self.signal, replaced).is_ok()
        {
            set_chained(self.index, self.chained_before);
        }
    }
}

/// The socket the handler writes to; returns its read end.
pub(crate) fn channel() -> io::Result<&'static UnixDatagram> {
    if CHANNEL.get().is_none() {
        let (read, write) = UnixDatagram::pair()?;
        write.set_nonblocking(true)?;
        // Losing a race to another thread just drops this pair.
        let _ = CHANNEL.set((read, write));
    }
    let (read, write) = CHANNEL
        .get()
        .ok_or_else(|| io::Error::other("the signal channel could not be created"))?;
    DELIVER_FD.store(write.as_raw_fd(), Ordering::SeqCst);
    Ok(read)
}

/// Sends a message on the channel as the handler would (the stop message).
pub(crate) fn send(message: [u8; 2]) -> io::Result<()> {
    let (_, write) = CHANNEL
        .get()
        .ok_or_else(|| io::Error::other("no signal channel"))?;
    write.send(&message).map(drop)
}

/// From now on the handler sends its datagrams with `generation` (not 0).
pub(crate) fn listen(generation: u8) {
    LISTENING.store(generation, Ordering::SeqCst);
}

/// From now on the handler sends nothing.
pub(crate) fn stop_listening() {
    LISTENING.store(0, Ordering::SeqCst);
}

/// The next signal exits the process at once with `status` (not 0).
pub(crate) fn arm_exit(status: i32) {
    EXIT_STATUS.store(status, Ordering::SeqCst);
}

pub(crate) fn disarm_exit() {
    EXIT_STATUS.store(0, Ordering::SeqCst);
}

/// Exits at once: no atexit handlers, no flush (a wedged thread may hold
/// the stdout lock).
pub(crate) fn exit_now(status: i32) -> ! {
    // SAFETY: `_exit` takes any status and never returns.
    unsafe { libc::_exit(status) }
}

/// `errno` as the interrupted code left it: a handler must not change it.
struct Errno(Option<c_int>);

impl Errno {
    fn save() -> Self {
        Errno(errno_location().map(|location| {
            // SAFETY: the location is this thread's errno, always valid.
            unsafe { *location }
        }))
    }

    fn restore(self) {
        if let (Some(value), Some(location)) = (self.0, errno_location()) {
            // SAFETY: as in `save`.
            unsafe { *location = value };
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "hurd", target_os = "emscripten"))]
fn errno_location() -> Option<*mut c_int> {
    // SAFETY: no preconditions; returns this thread's errno.
    Some(unsafe { libc::__errno_location() })
}

#[cfg(any(
    target_os = "android",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "cygwin"
))]
fn errno_location() -> Option<*mut c_int> {
    // SAFETY: no preconditions; returns this thread's errno.
    Some(unsafe { libc::__errno() })
}

#[cfg(any(
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "dragonfly"
))]
fn errno_location() -> Option<*mut c_int> {
    // SAFETY: no preconditions; returns this thread's errno.
    Some(unsafe { libc::__error() })
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "hurd",
    target_os = "emscripten",
    target_os = "android",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "cygwin",
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "dragonfly"
)))]
fn errno_location() -> Option<*mut c_int> {
    None
}

#[cfg(test)]
mod tests {
    //! Each test uses a signal of its own: tests run in parallel, and a
    //! disposition is process-wide. None of them listens on the channel
    //! (a `run` in another test may).

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use super::*;

    fn is_ours(signal: c_int) -> bool {
        current(signal).unwrap().sa_sigaction == our_address()
    }

    #[test]
    fn dropping_the_install_puts_the_default_back() {
        let signal = libc::SIGUSR1;
        assert_eq!(current(signal).unwrap().sa_sigaction, libc::SIG_DFL);
        let installed = install(signal).unwrap().expect("SIGUSR1 is not ignored");
        assert!(is_ours(signal));
        drop(installed);
        assert_eq!(current(signal).unwrap().sa_sigaction, libc::SIG_DFL);
    }

    #[test]
    fn an_ignored_signal_is_left_alone() {
        let signal = libc::SIGUSR2;
        // SAFETY: all-zero is a valid sigaction; SIG_IGN needs nothing else.
        let mut ignore: libc::sigaction = unsafe { std::mem::zeroed() };
        ignore.sa_sigaction = libc::SIG_IGN;
        set(signal, &ignore).unwrap();
        assert!(install(signal).unwrap().is_none());
        assert_eq!(current(signal).unwrap().sa_sigaction, libc::SIG_IGN);
    }

    static PROGRAM_HANDLER_CALLS: AtomicUsize = AtomicUsize::new(0);

    extern "C" fn program_handler(_: c_int) {
        PROGRAM_HANDLER_CALLS.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn a_handler_installed_before_is_called_through_ours_and_put_back() {
        let signal = libc::SIGURG;
        let address = program_handler as *const () as libc::sighandler_t;
        // SAFETY: all-zero is a valid sigaction; the handler only counts.
        let mut program: libc::sigaction = unsafe { std::mem::zeroed() };
        program.sa_sigaction = address;
        set(signal, &program).unwrap();
        let installed = install(signal).unwrap().expect("not ignored");
        // `raise` runs the handler on this thread before it returns.
        signal_hook::low_level::raise(signal).unwrap();
        assert_eq!(PROGRAM_HANDLER_CALLS.load(Ordering::SeqCst), 1);
        drop(installed);
        assert_eq!(current(signal).unwrap().sa_sigaction, address);
    }

    static SLOW_HANDLER_CALLS: AtomicUsize = AtomicUsize::new(0);
    static SLOW_HANDLER_INSIDE: AtomicBool = AtomicBool::new(false);
    static SLOW_HANDLER_RELEASED: AtomicBool = AtomicBool::new(false);

    /// The first call stays inside until released; the others return.
    extern "C" fn slow_handler(_: c_int) {
        if SLOW_HANDLER_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
            SLOW_HANDLER_INSIDE.store(true, Ordering::SeqCst);
            while !SLOW_HANDLER_RELEASED.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
        }
    }

    #[test]
    fn a_signal_on_another_thread_is_handled_while_one_thread_is_inside() {
        let signal = libc::SIGALRM;
        let address = slow_handler as *const () as libc::sighandler_t;
        // SAFETY: all-zero is a valid sigaction; the handler only spins on
        // and updates atomics.
        let mut program: libc::sigaction = unsafe { std::mem::zeroed() };
        program.sa_sigaction = address;
        set(signal, &program).unwrap();
        let installed = install(signal).unwrap().expect("not ignored");
        // This thread stays inside hatchery's handler (in the chained one)…
        let inside = std::thread::spawn(move || signal_hook::low_level::raise(signal).unwrap());
        while !SLOW_HANDLER_INSIDE.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        // …while this one gets the same signal: it is not taken for a
        // chain back into the handler.
        signal_hook::low_level::raise(signal).unwrap();
        let calls = SLOW_HANDLER_CALLS.load(Ordering::SeqCst);
        SLOW_HANDLER_RELEASED.store(true, Ordering::SeqCst);
        inside.join().unwrap();
        drop(installed);
        assert_eq!(calls, 2, "the second thread's signal was dropped");
    }

    #[test]
    fn a_handler_installed_over_ours_stays_in_charge_and_is_not_called_twice() {
        let signal = libc::SIGWINCH;
        let first = install(signal).unwrap().expect("not ignored");
        // signal-hook installs its handler over ours and chains to ours.
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        // SAFETY: signal-hook's contract for an action: it runs in a signal
        // handler, and this one only touches an atomic.
        let action = unsafe {
            signal_hook::low_level::register(signal, move || {
                counted.fetch_add(1, Ordering::SeqCst);
            })
        }
        .unwrap();
        drop(first);
        assert!(!is_ours(signal), "signal-hook's handler was replaced");
        // Installed again under signal-hook's, as the next `run` would: the
        // two handlers chain to each other, and still each runs once.
        let second = install(signal).unwrap().expect("not ignored");
        signal_hook::low_level::raise(signal).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        drop(second);
        signal_hook::low_level::raise(signal).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        signal_hook::low_level::unregister(action);
    }
}
