//! Unit tests of the shared file-driver pieces.

use super::*;

fn iov(base: usize, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: base as *mut libc::c_void,
        iov_len: len,
    }
}

#[test]
fn short_transfer_resubmits_the_exact_remainder() {
    let iovs = [iov(0x10000, 4096), iov(0x20000, 4096), iov(0x30000, 8192)];
    let align = Some(DirectAlign { mem: 512, len: 512 });
    let mut x = Transfer::new();
    x.begin(Op::Read, 1 << 20, 16384, true);
    let (p, n, off) = x.segments(&iovs, align);
    assert_eq!((p, n, off), (iovs.as_ptr(), 3, 1 << 20));
    // 6144 bytes done: the rest starts 2048 bytes into the second segment.
    assert_eq!(x.on_result(6144), Outcome::Resubmit);
    let (p, n, off) = x.segments(&iovs, align);
    // SAFETY: `p` points to `n` iovecs in the transfer's scratch array, alive until the
    // next call.
    let segs = unsafe { std::slice::from_raw_parts(p, n) };
    assert_eq!(off, (1 << 20) + 6144);
    assert_eq!(n, 2);
    assert_eq!(segs[0].iov_base as usize, 0x20000 + 2048);
    assert_eq!(segs[0].iov_len, 2048);
    assert_eq!(segs[1].iov_base as usize, 0x30000);
    assert!(x.direct, "a 512-aligned remainder stays direct");
    // 2048 more: exactly at a segment boundary, so the original array is reused.
    assert_eq!(x.on_result(2048), Outcome::Resubmit);
    let (p, n, _) = x.segments(&iovs, align);
    assert_eq!((p, n), (iovs[2..].as_ptr(), 1));
    assert_eq!(x.len - x.done, 8192);
    // An unaligned cut moves the rest to the buffered descriptor.
    assert_eq!(x.on_result(100), Outcome::Resubmit);
    x.segments(&iovs, align);
    assert!(!x.direct);
    assert_eq!(x.on_result(8092), Outcome::Done(IoStatus::Success));
}

#[test]
fn no_progress_is_eio_and_errors_are_reported() {
    let mut x = Transfer::new();
    x.begin(Op::Write, 0, 4096, false);
    assert_eq!(x.on_result(0), Outcome::Done(IoStatus::Failed(libc::EIO)));
    x.begin(Op::Write, 0, 4096, false);
    assert_eq!(
        x.on_result(-(libc::ENOSPC as i64)),
        Outcome::Done(IoStatus::Failed(libc::ENOSPC))
    );
    // EAGAIN is retried, but not forever.
    x.begin(Op::Read, 0, 4096, false);
    let mut n = 0;
    while x.on_result(-(libc::EAGAIN as i64)) == Outcome::Resubmit {
        n += 1;
        assert!(n < 100);
    }
    assert_eq!(n, MAX_RETRIES as usize);
    // EINVAL on the direct descriptor retries once on the buffered one.
    x.begin(Op::Read, 0, 4096, true);
    assert_eq!(x.on_result(-(libc::EINVAL as i64)), Outcome::Resubmit);
    assert!(!x.direct);
    assert_eq!(
        x.on_result(-(libc::EINVAL as i64)),
        Outcome::Done(IoStatus::Failed(libc::EINVAL))
    );
}

#[test]
fn unsupported_fallocate_mode_falls_back_once() {
    let mut x = Transfer::new();
    x.begin(Op::of(IoType::Unmap).unwrap(), 0, 4096, false);
    assert_eq!(x.on_result(-(libc::EOPNOTSUPP as i64)), Outcome::Resubmit);
    assert_eq!(
        x.op,
        Op::Fallocate {
            mode: ZERO_RANGE,
            alt: None,
            zeroes: false,
        }
    );
    assert_eq!(x.take_refused(), None);
    // Neither mode: an unmap is advisory and succeeds.
    assert_eq!(
        x.on_result(-(libc::EOPNOTSUPP as i64)),
        Outcome::Done(IoStatus::Success)
    );
    assert_eq!(x.take_refused(), Some(libc::EOPNOTSUPP));
    assert_eq!(x.take_refused(), None, "reported once");
    // Other errors are errors.
    x.begin(Op::of(IoType::WriteZeroes).unwrap(), 0, 4096, false);
    assert_eq!(
        x.on_result(-(libc::ENOSPC as i64)),
        Outcome::Done(IoStatus::Failed(libc::ENOSPC))
    );
    assert_eq!(x.take_refused(), None);
}

#[test]
fn write_zeroes_without_fallocate_become_writes_of_the_zero_buffer() {
    let len = (ZERO_CHUNK + 8192) as u64;
    let mut x = Transfer::new();
    x.begin(Op::of(IoType::WriteZeroes).unwrap(), 4096, len, false);
    assert_eq!(x.on_result(-(libc::ENOSYS as i64)), Outcome::Resubmit);
    assert_eq!(x.on_result(-(libc::EOPNOTSUPP as i64)), Outcome::Resubmit);
    assert_eq!(
        (x.op, x.take_refused()),
        (Op::ZeroFill, Some(libc::EOPNOTSUPP))
    );
    let align = Some(DirectAlign { mem: 512, len: 512 });
    let (p, n, off) = x.segments(&[], align);
    // SAFETY: `p` points to `n` iovecs in the transfer's scratch array, alive until the
    // next call.
    let seg = unsafe { std::slice::from_raw_parts(p, n) };
    assert_eq!((n, off, seg[0].iov_len), (1, 4096, ZERO_CHUNK));
    assert_eq!(seg[0].iov_base as usize, zeroes().as_ptr() as usize);
    assert!(x.direct, "the zero buffer is aligned for direct I/O");
    assert_eq!(x.on_result(ZERO_CHUNK as i64), Outcome::Resubmit);
    let (p, n, off) = x.segments(&[], align);
    // SAFETY: as above.
    let seg = unsafe { std::slice::from_raw_parts(p, n) };
    assert_eq!((off, seg[0].iov_len), (4096 + ZERO_CHUNK as u64, 8192));
    assert_eq!(x.on_result(8192), Outcome::Done(IoStatus::Success));
    assert!(zeroes().iter().all(|&b| b == 0));
}

#[test]
fn long_iovec_lists_go_in_iov_max_pieces() {
    let iovs: Vec<libc::iovec> = (0..IOV_MAX + 10)
        .map(|i| iov(0x1000 * (i + 1), 512))
        .collect();
    let total = (iovs.len() * 512) as u64;
    let mut x = Transfer::new();
    x.begin(Op::Write, 0, total, false);
    let (_, n, _) = x.segments(&iovs, None);
    assert_eq!(n, IOV_MAX);
    assert_eq!(x.on_result((IOV_MAX * 512) as i64), Outcome::Resubmit);
    let (p, n, off) = x.segments(&iovs, None);
    assert_eq!(
        (p, n, off),
        (iovs[IOV_MAX..].as_ptr(), 10, (IOV_MAX * 512) as u64)
    );
    assert_eq!(x.on_result(10 * 512), Outcome::Done(IoStatus::Success));
}

#[test]
fn alignment_check_covers_address_length_and_offset() {
    let a = DirectAlign {
        mem: 512,
        len: 4096,
    };
    assert!(a.fits(8192, &[iov(0x1000, 4096), iov(0x2200, 8192)]));
    assert!(!a.fits(8192, &[iov(0x1001, 4096)]));
    assert!(!a.fits(8192, &[iov(0x1000, 512)]));
    assert!(!a.fits(512, &[iov(0x1000, 4096)]));
}

#[test]
fn slots_hand_out_and_take_back_ids() {
    let mut s = Slots::new(2);
    let a = s.insert(BdevIo::alloc()).ok().unwrap();
    let b = s.insert(BdevIo::alloc()).ok().unwrap();
    assert_ne!(a, b);
    assert!(s.insert(BdevIo::alloc()).is_err());
    assert_eq!(s.in_use(), 2);
    assert!(s.get_mut(7).is_none());
    assert!(s.remove(a as u64).is_some());
    assert!(s.remove(a as u64).is_none(), "a stale id finds nothing");
    assert!(s.get_mut(a as u64).is_none());
    assert_eq!(s.in_use(), 1);
    assert_eq!(s.drain().count(), 1);
    assert_eq!(s.in_use(), 0);
}

#[test]
fn direct_io_is_used_where_the_file_system_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    File::create(&path).unwrap().set_len(1 << 20).unwrap();
    let p = path.to_str().unwrap();
    // Ask the file system directly, independently of `open_backing`.
    let supported = open_fd(p, false, libc::O_DIRECT).is_ok_and(|f| {
        let mut b = IoBuf::new(4096);
        f.read_at(b.as_mut_slice(), 0).is_ok()
    });
    let o = open_backing(p, Some(4096), false).unwrap();
    assert_eq!(o.backing.direct_align().is_some(), supported);
    match o.backing.direct_align() {
        Some(a) => {
            assert!(a.mem <= IoBuf::ALIGN && a.len <= 4096, "{a:?}");
            assert_ne!(o.backing.fd(true), o.backing.fd(false));
        }
        None => assert_eq!(o.backing.fd(true), o.backing.fd(false)),
    }
}

#[test]
fn open_reports_errno_and_geometry() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let e = open_backing(missing.to_str().unwrap(), None, false).unwrap_err();
    assert_eq!(e.errno(), libc::ENOENT);
    assert!(e.to_string().contains("nope"), "{e}");
    let e = open_backing(dir.path().to_str().unwrap(), None, false).unwrap_err();
    assert_eq!(e.errno(), libc::EISDIR);
    let e = open_backing("/dev/null", None, false).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL, "{e}");

    let path = dir.path().join("f");
    let f = File::create(&path).unwrap();
    f.set_len(10 * 4096 + 100).unwrap();
    let p = path.to_str().unwrap();
    let o = open_backing(p, None, false).unwrap();
    assert_eq!((o.block_size, o.num_blocks), (512, 80));
    assert!(!o.block_size_override);
    let o = open_backing(p, Some(4096), false).unwrap();
    assert_eq!((o.block_size, o.num_blocks), (4096, 10));
    assert!(o.block_size_override);
    let o = open_backing(p, Some(0), true).unwrap();
    assert_eq!(o.block_size, 512);
    for bad in [1000, 256, 1 << 20] {
        let e = open_backing(p, Some(bad), false).unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL, "{bad}: {e}");
    }
    f.set_len(100).unwrap();
    let e = open_backing(p, None, false).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
    assert!(e.to_string().contains("less than one block"), "{e}");
}
