using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Text;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Data;
using Reservoir.Fuse.Protocol;
using Reservoir.Fuse.Session;

namespace Reservoir.Fuse.Bridge;

/// <summary>
/// Turns FUSE requests into engine calls. Node ids are inode numbers (the kernel's root id 1
/// stands for inode 256). The engine loads inodes on demand, so lookup counts need no
/// bookkeeping here: FORGET is acknowledged by silence. Open files get a handle that remembers
/// O_DIRECT. Every engine answer is an errno; operations the engine does not offer answer
/// ENOSYS (the kernel then stops asking, or falls back) or EOPNOTSUPP.
/// </summary>
internal sealed partial class FuseBridge(Filesystem fs, FuseMountOptions options, Action<string> log)
{
    private sealed record OpenFile(ulong Ino, bool Direct);

    private readonly ConcurrentDictionary<ulong, OpenFile> _handles = new();
    private long _nextFh;
    private bool _initDone;
    public long Requests;

    private ulong Valid => (ulong)Math.Ceiling(options.AttrTimeoutSeconds);
    /// <summary>The engine node the mount's root (FUSE node 1) stands for: the top-level root, or
    /// the root of the subvolume chosen by subvol=/subvolid= or set as the default.</summary>
    private readonly ulong _root = ResolveRoot(fs, options);
    internal ulong RootNode => _root;
    private ulong Ino(ulong nodeId) => nodeId == Abi.RootId ? _root : nodeId;
    private ulong NodeOf(ulong ino) => ino == _root ? Abi.RootId : ino;

    private static ulong ResolveRoot(Filesystem fs, FuseMountOptions o)
    {
        var e = fs.ResolveMountRoot(o.Subvol, o.SubvolId, out ulong root);
        if (e != Errno.OK)
            throw new FsException(e, o.Subvol != null ? $"subvol={o.Subvol}: not a subvolume" : o.SubvolId is { } id ? $"subvolid={id}: no such subvolume" : $"the default subvolume {fs.DefaultSubvolume} does not exist");
        return root;
    }

    /// <summary>Handles one request; returns the reply length (0: no reply).</summary>
    public int Handle(ReadOnlySpan<byte> msg, Span<byte> outBuf)
    {
        Interlocked.Increment(ref Requests);
        var r = new RequestReader(msg);
        var w = new ReplyWriter(outBuf) { LocalInodeNumbers = options.LocalInodeNumbers };
        if (!r.HeaderValid) return msg.Length >= Abi.InHeaderSize ? w.Finish(r.Unique, (int)Errno.EINVAL).Length : 0;
        if (options.Debug) log($"fuse: {r.Opcode} node {r.NodeId} unique {r.Unique} len {r.Length}");
        var op = r.Opcode;
        if (op is Opcode.Forget or Opcode.BatchForget) return 0;
        if (!_initDone && op != Opcode.Init) return w.Finish(r.Unique, (int)Errno.EIO).Length;
        Errno e;
        Interlocked.Increment(ref _inFlight);
        try { e = Dispatch(ref r, ref w); }
        catch (FsException ex)
        {
            log($"fuse: {op} on node {r.NodeId}: {ex.Message}");
            e = ex.Errno is Errno.ENOSPC or Errno.EDQUOT or Errno.EROFS ? ex.Errno : Errno.EIO;
        }
        finally { Interlocked.Decrement(ref _inFlight); }
        if (options.Debug && e != Errno.OK) log($"fuse: {op} node {r.NodeId} -> {e}");
        return w.Finish(r.Unique, (int)e).Length;
    }

    /// <summary>Requests being handled now (DESTROY waits for the others).</summary>
    private int _inFlight;

    /// <summary>Run at FUSE_DESTROY, before its reply: the last commit and closing the image.
    /// The kernel sends DESTROY to a fuseblk mount only, from umount(2), and umount returns
    /// once it is answered, so the image is committed and free when umount returns, as a kernel
    /// filesystem's device is (not some milliseconds later, when the daemon exits: a `cp` of
    /// the image, or a new mount of it, right after umount would find it still being written).</summary>
    internal Action? OnDestroy { get; set; }

    private Errno Destroy()
    {
        if (OnDestroy == null) return Errno.OK;
        // Requests the kernel sent before DESTROY (a RELEASE of the last open file) may still be
        // on other threads: let them finish on an open engine.
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (Volatile.Read(ref _inFlight) > 1 && sw.Elapsed < TimeSpan.FromSeconds(10)) Thread.Sleep(1);
        OnDestroy();
        return Errno.OK;
    }

    private Errno Dispatch(ref RequestReader r, ref ReplyWriter w)
    {
        ulong ino = Ino(r.NodeId);
        var caller = CallerOf(r);
        switch (r.Opcode)
        {
            case Opcode.Init: return Init(ref r, ref w);
            case Opcode.Destroy: return Destroy();
            case Opcode.Lookup:
                {
                    if (!r.TryName(out var name)) return Errno.EINVAL;
                    var e = MayLookup(ino, caller, out ulong entryValid);
                    if (e != Errno.OK) return e;
                    e = fs.Lookup(ino, name, out var a);
                    if (e == Errno.OK) w.Entry(NodeOf(a.Ino), a, entryValid, Valid);
                    return e;
                }
            case Opcode.Getattr:
                {
                    var e = fs.GetAttr(ino, out var a);
                    if (e == Errno.OK) w.AttrOut(a, Valid);
                    return e;
                }
            case Opcode.Statx:
                {
                    // fuse_statx_in's mask asks; the answer is the same whatever it asks for
                    // (every basic field and the birth time cost one inode lookup).
                    if (!r.TryStruct(24, out _)) return Errno.EINVAL;
                    var e = fs.GetAttr(ino, out var a);
                    if (e == Errno.OK) w.StatxOut(a, Valid);
                    return e;
                }
            case Opcode.Setattr: return Setattr(ino, ref r, ref w, caller);
            case Opcode.Readlink:
                {
                    var e = fs.Readlink(ino, out byte[] target);
                    if (e == Errno.OK) w.Bytes(target);
                    return e;
                }
            case Opcode.Symlink:
                {
                    if (!r.TryName(out var name) || !r.TryName(out var target)) return Errno.EINVAL;
                    var pe = MayCreateIn(ino, caller, out ulong ev);
                    return pe != Errno.OK ? pe : Entry(fs.Symlink(ino, name, target, r.Uid, r.Gid, out var a), a, ref w, ev);
                }
            case Opcode.Mknod:
                {
                    if (!r.TryStruct(16, out var s) || !r.TryName(out var name)) return Errno.EINVAL;
                    // The umask applies unless the directory has a default ACL (the engine decides).
                    uint mode = U32(s, 0), umask = U32(s, 8);
                    var pe = MayCreateIn(ino, caller, out ulong ev);
                    return pe != Errno.OK ? pe : Entry(fs.Mknod(ino, name, mode, U32(s, 4), r.Uid, r.Gid, out var a, umask), a, ref w, ev);
                }
            case Opcode.Mkdir:
                {
                    if (!r.TryStruct(8, out var s) || !r.TryName(out var name)) return Errno.EINVAL;
                    uint mode = U32(s, 0), umask = U32(s, 4);
                    var pe = MayCreateIn(ino, caller, out ulong ev);
                    return pe != Errno.OK ? pe : Entry(fs.Mkdir(ino, name, mode, r.Uid, r.Gid, out var a, umask), a, ref w, ev);
                }
            case Opcode.Unlink:
                {
                    if (!r.TryName(out var name)) return Errno.EINVAL;
                    var pe = MayDelete(ino, name, caller);
                    return pe != Errno.OK ? pe : fs.Unlink(ino, name);
                }
            case Opcode.Rmdir:
                {
                    if (!r.TryName(out var name)) return Errno.EINVAL;
                    var pe = MayDelete(ino, name, caller);
                    return pe != Errno.OK ? pe : fs.Rmdir(ino, name);
                }
            case Opcode.Rename:
                {
                    if (!r.TryStruct(8, out var s) || !r.TryName(out var from) || !r.TryName(out var to)) return Errno.EINVAL;
                    var pe = MayRename(ino, from, Ino(U64(s, 0)), to, RenameFlags.None, caller);
                    return pe != Errno.OK ? pe : Renamed(fs.Rename(ino, from, Ino(U64(s, 0)), to, RenameFlags.None), ino, from, Ino(U64(s, 0)), to, RenameFlags.None);
                }
            case Opcode.Rename2:
                {
                    if (!r.TryStruct(16, out var s) || !r.TryName(out var from) || !r.TryName(out var to)) return Errno.EINVAL;
                    var pe = MayRename(ino, from, Ino(U64(s, 0)), to, (RenameFlags)U32(s, 8), caller);
                    // A whiteout left behind (RENAME_WHITEOUT) is the caller's, as a mknod's would be.
                    return pe != Errno.OK ? pe : Renamed(fs.Rename(ino, from, Ino(U64(s, 0)), to, (RenameFlags)U32(s, 8), r.Uid, r.Gid), ino, from, Ino(U64(s, 0)), to, (RenameFlags)U32(s, 8));
                }
            case Opcode.Link:
                {
                    if (!r.TryStruct(8, out var s) || !r.TryName(out var name)) return Errno.EINVAL;
                    var pe = MayCreateIn(ino, caller, out ulong ev);
                    return pe != Errno.OK ? pe : Entry(fs.Link(Ino(U64(s, 0)), ino, name, out var a), a, ref w, ev);
                }
            case Opcode.Open:
                {
                    if (!r.TryStruct(8, out var s)) return Errno.EINVAL;
                    var pe = MayOpen(ino, U32(s, 0), caller);
                    return pe != Errno.OK ? pe : Open(ino, U32(s, 0), ref w);
                }
            case Opcode.Create: return Create(ino, ref r, ref w, caller);
            case Opcode.Tmpfile: return Create(ino, ref r, ref w, caller, tmpfile: true);
            case Opcode.Read: return Read(ref r, ref w);
            case Opcode.Write: return Write(ref r, ref w);
            case Opcode.Release:
                {
                    if (!r.TryStruct(24, out var s)) return Errno.EINVAL;
                    return _handles.TryRemove(U64(s, 0), out var h) ? fs.Release(h.Ino) : Errno.OK;
                }
            case Opcode.Flush: return Errno.OK;
            case Opcode.Fsync:
                {
                    if (!r.TryStruct(16, out var s)) return Errno.EINVAL;
                    return fs.Fsync(ino, (U32(s, 8) & 1) != 0);
                }
            case Opcode.Opendir:
                {
                    var e = CheckDir(ino, caller, PosixAccess.MayRead, out _);
                    if (e != Errno.OK) return e;
                    w.U64(0);
                    w.U32(0);
                    w.U32(0);
                    return Errno.OK;
                }
            case Opcode.Readdir: return Readdir(ino, ref r, ref w);
            case Opcode.Releasedir: return Errno.OK;
            case Opcode.Fsyncdir:
            case Opcode.Syncfs: // a fuseblk mount's sync(1) and syncfs(2)
                return fs.Sync();
            case Opcode.Statfs:
                {
                    fs.StatFs(ino, out var st); // a subvolume with a limit shows it as its size
                    var s = w.Take(Abi.StatfsOutSize);
                    BinaryPrimitives.WriteUInt64LittleEndian(s, st.Blocks);
                    BinaryPrimitives.WriteUInt64LittleEndian(s[8..], st.BlocksFree);
                    BinaryPrimitives.WriteUInt64LittleEndian(s[16..], st.BlocksAvail);
                    BinaryPrimitives.WriteUInt64LittleEndian(s[24..], st.Files);
                    BinaryPrimitives.WriteUInt64LittleEndian(s[32..], st.FilesFree);
                    BinaryPrimitives.WriteUInt32LittleEndian(s[40..], st.BlockSize);
                    BinaryPrimitives.WriteUInt32LittleEndian(s[44..], st.NameMax);
                    BinaryPrimitives.WriteUInt32LittleEndian(s[48..], st.BlockSize);
                    return Errno.OK;
                }
            case Opcode.Setxattr:
                {
                    if (!r.TryStruct(8, out var s) || !r.TryName(out var name) || !r.TryBytes((int)U32(s, 0), out var value)) return Errno.EINVAL;
                    var flags = U32(s, 4) switch { 1 => XattrSetFlags.Create, 2 => XattrSetFlags.Replace, 0 => XattrSetFlags.Any, _ => (XattrSetFlags)(-1) };
                    if ((int)flags < 0) return Errno.EINVAL;
                    var pe = MayXattr(ino, name, PosixAccess.MayWrite, caller);
                    return pe != Errno.OK ? pe : SetXattr(ino, name, value, flags, caller);
                }
            case Opcode.Getxattr:
                {
                    if (!r.TryStruct(8, out var s) || !r.TryName(out var name)) return Errno.EINVAL;
                    var e = MayXattr(ino, name, PosixAccess.MayRead, caller);
                    if (e != Errno.OK) return e;
                    e = fs.GetXattr(ino, name, out var value);
                    if (e != Errno.OK) return e;
                    return SizedReply(value, U32(s, 0), ref w);
                }
            case Opcode.Listxattr:
                {
                    if (!r.TryStruct(8, out var s)) return Errno.EINVAL;
                    var e = fs.ListXattrNames(ino, out var names);
                    if (e != Errno.OK) return e;
                    var all = names.SelectMany(n => n.Append((byte)0)).ToArray();
                    return SizedReply(all, U32(s, 0), ref w);
                }
            case Opcode.Removexattr:
                {
                    if (!r.TryName(out var name)) return Errno.EINVAL;
                    var pe = MayXattr(ino, name, PosixAccess.MayWrite, caller);
                    return pe != Errno.OK ? pe : fs.RemoveXattr(ino, name);
                }
            case Opcode.Fallocate:
                {
                    if (!r.TryStruct(32, out var s)) return Errno.EINVAL;
                    var de = DropPrivilegesOfCaller(ino, r.Uid);
                    return de != Errno.OK ? de : fs.Fallocate(ino, (FallocateMode)U32(s, 24), U64(s, 8), U64(s, 16));
                }
            case Opcode.Lseek:
                {
                    if (!r.TryStruct(24, out var s)) return Errno.EINVAL;
                    uint whence = U32(s, 16);
                    if (whence is not (3 or 4)) return Errno.EINVAL; // the kernel handles SEEK_SET/CUR/END
                    var e = fs.Seek(ino, U64(s, 8), whence == 3, out ulong pos);
                    if (e == Errno.OK) w.U64(pos);
                    return e;
                }
            case Opcode.Access:
                return r.TryStruct(8, out var am) ? Access(ino, U32(am, 0), caller) : Errno.EINVAL;
            case Opcode.Ioctl: return Ioctl(ref r, ref w, ino);
            // Requests are served inline and cannot be interrupted: ENOSYS makes the kernel stop
            // sending INTERRUPTs. Locks are the kernel's own (POSIX_LOCKS and FLOCK_LOCKS are not
            // negotiated, so it never asks).
            case Opcode.Interrupt:
            case Opcode.Getlk:
            case Opcode.Setlk:
            case Opcode.Setlkw:
                return Errno.ENOSYS;
            case Opcode.CopyFileRange: return CopyFileRange(ino, ref r, ref w);
            case Opcode.Bmap:
            case Opcode.Poll:
            case Opcode.Readdirplus:
            case Opcode.SetupMapping:
            case Opcode.RemoveMapping:
                return Errno.ENOSYS;
            default:
                return Errno.ENOSYS;
        }
    }

    private static uint U32(ReadOnlySpan<byte> s, int off) => BinaryPrimitives.ReadUInt32LittleEndian(s[off..]);
    private static ulong U64(ReadOnlySpan<byte> s, int off) => BinaryPrimitives.ReadUInt64LittleEndian(s[off..]);

    private Errno Entry(Errno e, in InodeAttr a, ref ReplyWriter w, ulong entryValid)
    {
        if (e == Errno.OK) w.Entry(NodeOf(a.Ino), a, entryValid, Valid);
        return e;
    }

    private static Errno SizedReply(byte[] value, uint size, ref ReplyWriter w)
    {
        if (size == 0)
        {
            w.U32((uint)value.Length);
            w.U32(0);
            return Errno.OK;
        }
        if (value.Length > size) return Errno.ERANGE;
        w.Bytes(value);
        return Errno.OK;
    }

    private Errno Init(ref RequestReader r, ref ReplyWriter w)
    {
        if (!r.TryStruct(16, out var s)) return Errno.EINVAL;
        uint major = U32(s, 0), minor = U32(s, 4), readahead = U32(s, 8), flags = U32(s, 12);
        if (major != Abi.KernelMajor) { log($"fuse: kernel speaks protocol {major}.{minor}, need 7.x"); return Errno.EPROTO; }
        uint want = Abi.AsyncRead | Abi.BigWrites | Abi.ParallelDirops | Abi.MaxPages | Abi.AutoInvalData | Abi.IoctlDir | Abi.HandleKillprivV2 | Abi.DontMask;
        // ACLs are enforced by whoever checks permissions: the daemon (PosixAccess.Allows), or
        // with default_permissions the kernel, which does so only with FUSE_POSIX_ACL (and reads
        // them through GETXATTR, caching them).
        if (!_checks) want |= Abi.PosixAcl;
        w.U32(Abi.KernelMajor);
        w.U32(Math.Min(minor, Abi.KernelMinor));
        w.U32(readahead);
        w.U32(flags & want);
        var t = w.Take(48);
        BinaryPrimitives.WriteUInt16LittleEndian(t, 16);                       // max_background
        BinaryPrimitives.WriteUInt16LittleEndian(t[2..], 12);                  // congestion_threshold
        BinaryPrimitives.WriteUInt32LittleEndian(t[4..], FuseSession.MaxWrite); // max_write
        BinaryPrimitives.WriteUInt32LittleEndian(t[8..], 1);                   // time_gran: nanoseconds
        BinaryPrimitives.WriteUInt16LittleEndian(t[12..], (ushort)(FuseSession.MaxWrite / 4096)); // max_pages
        _initDone = true;
        if (!options.IsSubmount) log($"fuse: kernel {major}.{minor}, negotiated flags 0x{flags & want:x}, max_write {FuseSession.MaxWrite}");
        return Errno.OK;
    }

    private Errno Setattr(ulong ino, ref RequestReader r, ref ReplyWriter w, in Caller caller)
    {
        if (!r.TryStruct(88, out var s)) return Errno.EINVAL;
        uint valid = U32(s, 0);
        var req = new SetAttrRequest();
        if ((valid & Abi.FattrMode) != 0) { req.Mask |= SetAttrMask.Mode; req.Mode = U32(s, 68); }
        if ((valid & Abi.FattrUid) != 0) { req.Mask |= SetAttrMask.Uid; req.Uid = U32(s, 76); }
        if ((valid & Abi.FattrGid) != 0) { req.Mask |= SetAttrMask.Gid; req.Gid = U32(s, 80); }
        if ((valid & Abi.FattrSize) != 0) { req.Mask |= SetAttrMask.Size; req.Size = U64(s, 16); }
        if ((valid & Abi.FattrAtimeNow) != 0) req.Mask |= SetAttrMask.AtimeNow;
        else if ((valid & Abi.FattrAtime) != 0) { req.Mask |= SetAttrMask.Atime; req.Atime = new Format.Timespec((long)U64(s, 32), U32(s, 56)); }
        if ((valid & Abi.FattrMtimeNow) != 0) req.Mask |= SetAttrMask.MtimeNow;
        else if ((valid & Abi.FattrMtime) != 0) { req.Mask |= SetAttrMask.Mtime; req.Mtime = new Format.Timespec((long)U64(s, 40), U32(s, 60)); }
        if ((valid & Abi.FattrCtime) != 0) { req.Mask |= SetAttrMask.Ctime; req.Ctime = new Format.Timespec((long)U64(s, 48), U32(s, 64)); }
        var ge = fs.GetAttr(ino, out var before);
        if (ge != Errno.OK) return ge;
        var pe = MaySetattr(before, valid, ref req, caller);
        if (pe != Errno.OK) return pe;
        // HANDLE_KILLPRIV_V2: a truncate drops security.capability (and, when the kernel says
        // the caller lacks CAP_FSETID, set-user-ID and set-group-ID); a chown drops all three
        // on a file, as the VFS's notify_change would (DropPrivileges leaves directories be).
        bool chown = (req.Mask & (SetAttrMask.Uid | SetAttrMask.Gid)) != 0;
        if ((req.Mask & SetAttrMask.Size) != 0 || chown)
        {
            var de = fs.DropPrivileges(ino, setIds: chown || (valid & Abi.FattrKillSuidgid) != 0, out _);
            if (de != Errno.OK) return de;
        }
        var e = fs.SetAttr(ino, req, out var a);
        if (e != Errno.OK) return e;
        w.AttrOut(a, Valid);
        ExpireNamesAfterChmod(before, a);
        return e;
    }

    private const uint O_DIRECT = 0x4000, O_ACCMODE = 3;

    private Errno Open(ulong ino, uint flags, ref ReplyWriter w)
    {
        var e = fs.Open(ino, (flags & O_ACCMODE) != 0, out var a);
        if (e != Errno.OK) return e;
        if (a.IsDir) { fs.Release(ino); return Errno.EISDIR; }
        bool direct = (flags & O_DIRECT) != 0;
        ulong fh = (ulong)Interlocked.Increment(ref _nextFh);
        _handles[fh] = new OpenFile(ino, direct);
        w.U64(fh);
        w.U32(direct ? Abi.FopenDirectIo : 0);
        w.U32(0);
        return Errno.OK;
    }

    /// <summary>create: the new file belongs to the caller (its group the directory's when the
    /// directory is set-group-ID, as the engine decides) and is opened without a permission
    /// check, as open(O_CREAT) with a mode that denies the creator still succeeds. tmpfile
    /// (open(O_TMPFILE), FUSE_TMPFILE: the same request, its name a placeholder) makes the file
    /// nameless (<c>Filesystem.Tmpfile</c>).</summary>
    private Errno Create(ulong dir, ref RequestReader r, ref ReplyWriter w, in Caller caller, bool tmpfile = false)
    {
        if (!r.TryStruct(16, out var s) || !r.TryName(out var name)) return Errno.EINVAL;
        uint flags = U32(s, 0), mode = U32(s, 4), umask = U32(s, 8);
        var e = MayCreateIn(dir, caller, out ulong entryValid);
        if (e != Errno.OK) return e;
        e = tmpfile ? fs.Tmpfile(dir, mode, r.Uid, r.Gid, out var a, umask) : fs.Mknod(dir, name, mode, 0, r.Uid, r.Gid, out a, umask);
        if (e != Errno.OK) return e;
        w.Entry(NodeOf(a.Ino), a, entryValid, Valid);
        return Open(a.Ino, flags, ref w);
    }

    private Errno Read(ref RequestReader r, ref ReplyWriter w)
    {
        if (!r.TryStruct(40, out var s)) return Errno.EINVAL;
        ulong fh = U64(s, 0), off = U64(s, 8);
        int size = (int)Math.Min(U32(s, 16), (uint)w.Room);
        var h = _handles.GetValueOrDefault(fh);
        ulong ino = h?.Ino ?? Ino(r.NodeId);
        var dst = w.Take(size);
        var e = h?.Direct == true ? fs.ReadDirect(ino, off, dst, out int n) : fs.Read(ino, off, dst, out n);
        if (e != Errno.OK) return e;
        // Shrink the reply to what was read.
        w = ShrinkTo(w, size - n);
        return Errno.OK;
    }

    private static ReplyWriter ShrinkTo(ReplyWriter w, int unused) { w.Unwrite(unused); return w; }

    private Errno Write(ref RequestReader r, ref ReplyWriter w)
    {
        if (!r.TryStruct(40, out var s)) return Errno.EINVAL;
        ulong fh = U64(s, 0), off = U64(s, 8);
        int size = (int)U32(s, 16);
        if (!r.TryBytes(size, out var data)) return Errno.EINVAL;
        var h = _handles.GetValueOrDefault(fh);
        ulong ino = h?.Ino ?? Ino(r.NodeId);
        // HANDLE_KILLPRIV_V2: the kernel no longer strips set-user-ID, set-group-ID and
        // security.capability before a write (nor asks for security.capability first); the
        // write flags say whether the writer lacks CAP_FSETID.
        var de = DropPrivileges(ino, setIds: (U32(s, 20) & Abi.WriteKillSuidgid) != 0);
        if (de != Errno.OK) return de;
        var e = h?.Direct == true ? fs.WriteDirect(ino, off, data, out int n) : fs.Write(ino, off, data, out n);
        if (e != Errno.OK) return e;
        w.U32((uint)n);
        w.U32(0);
        return Errno.OK;
    }

    /// <summary>
    /// fallocate and copy_file_range change a file's data as a write does, but under
    /// HANDLE_KILLPRIV_V2 the kernel tells the daemon nothing about the caller's CAP_FSETID
    /// for them (it does for write and truncate). The caller's uid stands in for it: root keeps
    /// set-user-ID and set-group-ID, anyone else loses them, as the VFS decides for callers
    /// with the usual capabilities; security.capability goes in any case.
    /// </summary>
    private Errno DropPrivilegesOfCaller(ulong ino, uint uid) => DropPrivileges(ino, setIds: uid != 0);

    /// <summary>The engine's DropPrivileges before a change of data; when something went,
    /// the kernel is told to forget the inode's attributes, or it keeps showing the old mode
    /// until the attribute timeout (a setattr needs no such notice: its reply carries them).</summary>
    private Errno DropPrivileges(ulong ino, bool setIds)
    {
        var e = fs.DropPrivileges(ino, setIds, out bool dropped);
        if (dropped) InvalidateAttr(ino);
        return e;
    }

    /// <summary>copy_file_range: the engine's, a reflink where the ranges allow (so `cp` on
    /// Reservoir shares extents), else a copy; the reply is the count done.</summary>
    private Errno CopyFileRange(ulong inoIn, ref RequestReader r, ref ReplyWriter w)
    {
        if (!r.TryStruct(56, out var s)) return Errno.EINVAL;
        ulong offIn = U64(s, 8), inoOut = Ino(U64(s, 16)), offOut = U64(s, 32), len = U64(s, 40), flags = U64(s, 48);
        if (flags != 0) return Errno.EINVAL;
        var de = DropPrivilegesOfCaller(inoOut, r.Uid);
        if (de != Errno.OK) return de;
        var e = fs.CopyFileRange(inoIn, offIn, inoOut, offOut, len, out ulong done);
        if (e != Errno.OK && done == 0) return e;
        w.U32((uint)done);
        w.U32(0);
        return Errno.OK;
    }

    private Errno Readdir(ulong ino, ref RequestReader r, ref ReplyWriter w)
    {
        if (!r.TryStruct(40, out var s)) return Errno.EINVAL;
        ulong cookie = U64(s, 8);
        int size = (int)Math.Min(U32(s, 16), (uint)w.Room);
        int used = 0;
        var entries = new List<DirEntryInfo>();
        var e = fs.ReadDir(ino, cookie, d =>
        {
            int rec = (Abi.DirentHeaderSize + d.NameBytes.Length + 7) & ~7;
            if (used + rec > size) return false;
            used += rec;
            entries.Add(d);
            return true;
        });
        if (e != Errno.OK) return e;
        foreach (var d in entries)
        {
            int rec = (Abi.DirentHeaderSize + d.NameBytes.Length + 7) & ~7;
            var b = w.Take(rec);
            BinaryPrimitives.WriteUInt64LittleEndian(b, w.InoOf(d.Ino));
            BinaryPrimitives.WriteUInt64LittleEndian(b[8..], d.Cookie);
            BinaryPrimitives.WriteUInt32LittleEndian(b[16..], (uint)d.NameBytes.Length);
            BinaryPrimitives.WriteUInt32LittleEndian(b[20..], d.Type);
            d.NameBytes.CopyTo(b[24..]);
        }
        return Errno.OK;
    }
}
