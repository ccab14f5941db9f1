namespace Reservoir.Fuse.Bridge;

/// <summary>
/// A send through the mount that the daemon writes itself ('R' 17, <see cref="FuseBridge"/>):
/// read-only subvolume <see cref="Subvolume"/> as a stream naming it <see cref="Name"/>, whole
/// (<see cref="Parent"/> 0) or as the changes since <see cref="Parent"/>, data the receiving side
/// has in <see cref="CloneSources"/> as clones, in stream version <see cref="Version"/>, with or
/// without the data (<see cref="NoData"/>), without the stream's header or its END when it goes
/// on or is continued by another subvolume's (`send -e`). Ids are subvolume (tree) ids.
/// </summary>
public sealed record DaemonSendRequest(ulong Subvolume, ulong Parent, IReadOnlyList<ulong> CloneSources, string Name, int Version, bool NoData,
    bool OmitStreamHeader = false, bool OmitEnd = false);

/// <summary>What a daemon-written send wrote, as the send's summary counts it.</summary>
public readonly record struct DaemonSendCounts(long Commands, long StreamBytes, long Inodes, long DataBytes, long CloneBytes, long InodesExamined, long HoleBytes);

/// <summary>
/// Writes the stream <paramref name="request"/> asks for to <paramref name="output"/>. The FUSE
/// layer knows nothing of the send format (the .NET API's Send folder does); the program serving
/// the mount supplies this (<see cref="DaemonSendService"/>). Throws
/// <see cref="Common.FsException"/> for a send that cannot be made (the errno and the reason
/// go back to the caller) and <see cref="IOException"/> when the output fails.
/// </summary>
public delegate DaemonSendCounts DaemonSendWriter(DaemonSendRequest request, Stream output);

/// <summary>
/// Applies the send streams on <paramref name="input"/> in directory <paramref name="destination"/>
/// (a node id), as `receive` does, and returns what receive says of them, a line each (with
/// <paramref name="detail"/>, as `receive -v` does); every
/// subvolume it makes there, kept or deleted after a failure, is added to
/// <paramref name="made"/> (the kernel is told to forget what it knew of those names). Throws
/// <see cref="Common.FsException"/> for a stream that cannot be received, with the reason.
/// </summary>
public delegate IReadOnlyList<string> DaemonReceiver(ulong destination, Stream input, List<string> made, bool detail);
