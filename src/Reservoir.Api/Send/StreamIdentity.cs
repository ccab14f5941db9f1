namespace Reservoir.Api.Send;

/// <summary>
/// How streams name subvolumes and how a receiver finds the one a stream names, in one place
/// for the image and the mount, the sender and the receiver.
/// </summary>
public static class StreamIdentity
{
    /// <summary>The uuid a stream names a subvolume by: the one it was received as, if it was
    /// received, else its own, as btrfs's send does. So snapshots passed on from a received copy
    /// (A → B → C) and increments sent from the original (A → C) meet at C.</summary>
    public static Guid Of(Guid uuid, Guid receivedUuid) => receivedUuid != Guid.Empty ? receivedUuid : uuid;

    /// <summary>
    /// Which of <paramref name="subvolumes"/> a stream names by <paramref name="uuid"/> and
    /// <paramref name="ctransid"/> (as its parent or a clone source), or -1. A read-only one
    /// received from it, by uuid alone, as btrfs receive finds it: the sender names a parent it
    /// received itself by that parent's received uuid and its own ctransid, and a received
    /// subvolume made writable forgets its received uuid, so one still carrying it is as
    /// received. Else the subvolume itself (a stream come back), read-only and unchanged since:
    /// its generation is the ctransid.
    /// </summary>
    public static int Find(IReadOnlyList<(Guid Uuid, Guid ReceivedUuid, ulong Generation, bool ReadOnly)> subvolumes, Guid uuid, ulong ctransid)
    {
        for (int i = 0; i < subvolumes.Count; i++)
            if (subvolumes[i].ReadOnly && subvolumes[i].ReceivedUuid == uuid) return i;
        for (int i = 0; i < subvolumes.Count; i++)
            if (subvolumes[i].ReadOnly && subvolumes[i].Uuid == uuid && subvolumes[i].Generation == ctransid) return i;
        return -1;
    }
}
