using System.Buffers.Binary;
using System.Text;
using Microsoft.Win32.SafeHandles;
using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Fuse.Protocol;

namespace Reservoir.Fuse.Bridge;

/// <summary>
/// Sends and receives through the mount run by the daemon, as btrfs's are run by the kernel:
/// the caller makes a pipe and asks 'R' 17 on the root of the read-only subvolume to send (or
/// 'R' 19 on the directory to receive into), naming its end of the pipe by descriptor number;
/// the daemon opens that pipe through /proc/PID/fd of the asking thread and answers at once with
/// a token, while a thread of <see cref="DaemonStreamService"/> writes the stream into the pipe
/// from the engine (or applies what it reads to the engine): no FUSE round trip per file, where
/// a send that walks the mount spends five or six. The caller copies the pipe to its end and
/// asks 'R' 18 for the outcome.
///
/// Who may: root and the user the daemon runs as (a stream holds every file whatever the
/// permissions of the directories above it, as btrfs's send and receive are CAP_SYS_ADMIN's);
/// others, and a caller the daemon cannot see (another pid namespace), get EPERM and walk the
/// mount instead. The descriptor is trusted only if it is a pipe whose inode is the one the
/// caller names (fstat of its end): a number that happens to name another file of the process
/// is refused.
///
/// 'R' 17, _IOWR(16376). In: u32 fd, u32 stream version, u64 the pipe's inode, u64 the
/// parent's subvolume id (0: a full send), u32 flags (1: no data, 2: no stream header, 4: no
/// END: `send -e`), u16 name length, u16 clone
/// source count, the name at 32 (at most 255 bytes), the clone sources' ids (u64) from 288.
/// 'R' 19, _IOWR(16376). In: u64 fd, u64 the pipe's inode, u64 flags (1: say what each stream
/// names, `receive -v`).
/// Both out: u64 the token. Their errno is for what never started: ENOTTY (this daemon does not
/// run them), EPERM, EINVAL, ENOTDIR, EBADF, EBUSY (the
/// mount is going away).
/// 'R' 18, _IOWR(16376). In: u64 the token. Out: s32 errno of the send or receive (0: whole),
/// u32 message length, seven s64 counts (a send's commands, stream bytes, inodes, data bytes,
/// cloned bytes, inodes examined, punched bytes; a receive's stream bytes alone), from 64 the
/// message (UTF-8): the reason, or what a receive says it received, a line each. Its errno:
/// EAGAIN while it runs, ENOENT for a token unknown or already answered.
/// </summary>
internal sealed partial class FuseBridge
{
    internal const uint IocDaemonSend = 0xC0000000 | (SubvolListSize << 16) | (0x52 << 8) | 17;
    internal const uint IocDaemonSendOutcome = 0xC0000000 | (SubvolListSize << 16) | (0x52 << 8) | 18;
    internal const uint IocDaemonReceive = 0xC0000000 | (SubvolListSize << 16) | (0x52 << 8) | 19;
    internal const int DaemonSendNameAt = 32, DaemonSendClonesAt = 288, DaemonSendMessageAt = 64;
    internal const int DaemonSendMaxClones = ((int)SubvolListSize - DaemonSendClonesAt) / 8;

    private Errno DaemonSend(ref RequestReader r, ref ReplyWriter w, ulong ino, uint inSize, uint outSize)
    {
        if (options.Streams is not { } streams) return Errno.ENOTTY;
        if (!OwnsImage(r) || r.Pid == 0) return Errno.EPERM;
        if (inSize != SubvolListSize || outSize != SubvolListSize || !r.TryBytes((int)inSize, out var arg)) return Errno.EINVAL;
        var (tree, root) = NodeIds.Decode(ino);
        if (root != Engine.Filesystem.RootIno) return Errno.EINVAL;
        int fd = (int)BinaryPrimitives.ReadUInt32LittleEndian(arg);
        int version = (int)BinaryPrimitives.ReadUInt32LittleEndian(arg[4..]);
        ulong pipeIno = BinaryPrimitives.ReadUInt64LittleEndian(arg[8..]);
        ulong parent = BinaryPrimitives.ReadUInt64LittleEndian(arg[16..]);
        uint flags = BinaryPrimitives.ReadUInt32LittleEndian(arg[24..]);
        int nameLen = BinaryPrimitives.ReadUInt16LittleEndian(arg[28..]);
        int cloneCount = BinaryPrimitives.ReadUInt16LittleEndian(arg[30..]);
        if (fd < 0 || nameLen is 0 or > 255 || cloneCount > DaemonSendMaxClones || (flags & ~7u) != 0) return Errno.EINVAL;
        string name;
        try { name = new UTF8Encoding(false, true).GetString(arg.Slice(DaemonSendNameAt, nameLen)); }
        catch (DecoderFallbackException) { return Errno.EINVAL; }
        var clones = new ulong[cloneCount];
        for (int i = 0; i < cloneCount; i++) clones[i] = BinaryPrimitives.ReadUInt64LittleEndian(arg[(DaemonSendClonesAt + 8 * i)..]);
        var pe = OpenCallersPipe(r.Pid, fd, pipeIno, write: true, out var pipe);
        if (pe != Errno.OK) return pe;
        return TokenReply(ref w, streams.StartSend(new DaemonSendRequest(tree, parent, clones, name, version, (flags & 1) != 0, (flags & 2) != 0, (flags & 4) != 0), pipe!));
    }

    /// <summary>The token of what started, or EBUSY when nothing starts any more (unmounting).</summary>
    private Errno TokenReply(ref ReplyWriter w, ulong token)
    {
        if (token == 0) return Errno.EBUSY;
        var page = new byte[SubvolListSize];
        BinaryPrimitives.WriteUInt64LittleEndian(page, token);
        return Reply(ref w, page);
    }

    /// <summary>'R' 19 on a directory: apply the streams the caller writes into its pipe there.</summary>
    private Errno DaemonReceive(ref RequestReader r, ref ReplyWriter w, ulong ino, uint inSize, uint outSize)
    {
        if (options.Streams is not { } streams) return Errno.ENOTTY;
        if (!OwnsImage(r) || r.Pid == 0) return Errno.EPERM;
        if (inSize != SubvolListSize || outSize != SubvolListSize || !r.TryBytes((int)inSize, out var arg)) return Errno.EINVAL;
        ulong fd = BinaryPrimitives.ReadUInt64LittleEndian(arg), pipeIno = BinaryPrimitives.ReadUInt64LittleEndian(arg[8..]);
        ulong flags = BinaryPrimitives.ReadUInt64LittleEndian(arg[16..]);
        if (fd > int.MaxValue || (flags & ~1UL) != 0) return Errno.EINVAL;
        var ge = fs.GetAttr(ino, out var dir);
        if (ge != Errno.OK) return ge;
        if (!dir.IsDir) return Errno.ENOTDIR;
        var pe = OpenCallersPipe(r.Pid, (int)fd, pipeIno, write: false, out var pipe);
        if (pe != Errno.OK) return pe;
        // What the receive made (or made and deleted) appears behind the kernel's back: its
        // cached entries for those names go, and the directory's attributes. With submounts, a
        // subvolume it kept gets its own mount, as one made by the subvolume ioctls does (the
        // submount thread makes it; the command waits for it as `subvolume create` does).
        return TokenReply(ref w, streams.StartReceive(ino, (flags & 1) != 0, pipe!, made =>
        {
            foreach (var name in made)
            {
                var bytes = Encoding.UTF8.GetBytes(name);
                InvalidateEntry(ino, bytes);
                if (Submounts != null) MountIfSubvolume(ino, bytes);
            }
            if (made.Count == 0) InvalidateAttr(ino);
        }));
    }

    private Errno DaemonSendOutcome(ref RequestReader r, ref ReplyWriter w, uint inSize, uint outSize)
    {
        if (options.Streams is not { } streams) return Errno.ENOTTY;
        if (!OwnsImage(r)) return Errno.EPERM;
        if (!SendQueryArgs(ref r, inSize, outSize, out ulong token, out _)) return Errno.EINVAL;
        var e = streams.TakeOutcome(token, out var outcome);
        if (e != Errno.OK) return e;
        var page = new byte[SubvolListSize];
        // A receive that went well says what it received, a line each.
        var msg = Encoding.UTF8.GetBytes(outcome.Errno == Errno.OK && outcome.Received.Count > 0 ? string.Join('\n', outcome.Received) : outcome.Message);
        int msgLen = Math.Min(msg.Length, page.Length - DaemonSendMessageAt);
        BinaryPrimitives.WriteInt32LittleEndian(page, (int)outcome.Errno);
        BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(4), (uint)msgLen);
        var c = outcome.Counts;
        long[] counts = [c.Commands, outcome.StreamBytes, c.Inodes, c.DataBytes, c.CloneBytes, c.InodesExamined, c.HoleBytes];
        for (int i = 0; i < counts.Length; i++) BinaryPrimitives.WriteInt64LittleEndian(page.AsSpan(8 + 8 * i), counts[i]);
        msg.AsSpan(0, msgLen).CopyTo(page.AsSpan(DaemonSendMessageAt));
        return Reply(ref w, page);
    }

    /// <summary>Opens the caller's pipe, to write or to read: descriptor <paramref name="fd"/> of
    /// thread <paramref name="pid"/>, which must be a pipe with inode <paramref name="pipeIno"/>.
    /// Non-blocking (a pipe whose reader is gone answers ENXIO instead of waiting for one, and
    /// <see cref="PipeOutput"/> waits for a full pipe in poll, where a stop can end it); the
    /// open makes a file description of the daemon's own, so the caller's stays as it was.</summary>
    private static Errno OpenCallersPipe(uint pid, int fd, ulong pipeIno, bool write, out SafeFileHandle? pipe)
    {
        pipe = null;
        const int O_RDONLY = 0, O_WRONLY = 1;
        int h = Session.Libc.Open($"/proc/{pid}/fd/{fd}", (write ? O_WRONLY : O_RDONLY) | Session.Libc.O_NONBLOCK | Session.Libc.O_CLOEXEC);
        if (h < 0) return Errno.EBADF;
        var handle = new SafeFileHandle(h, ownsHandle: true);
        if (Session.Libc.FileTypeAndInode(h) is not ({ } type, { } inode) || type != 0x1000 || inode != pipeIno)
        {
            handle.Dispose();
            return Errno.EBADF;
        }
        pipe = handle;
        return Errno.OK;
    }
}
