/// FAT12/16/32 boot sector (BIOS parameter block) at byte 0.
enum FAT {
    static func probe<S>(_ r: Region<S>) -> FilesystemInfo? {
        guard let bs = r.read(0, 512), bs.u8(510) == 0x55, bs.u8(511) == 0xAA else { return nil }
        guard bs.u8(0) == 0xEB || bs.u8(0) == 0xE9 else { return nil }
        let bytesPerSector = bs.le16(11)
        let sectorsPerCluster = bs.u8(13)
        let media = bs.u8(21)
        guard [512, 1024, 2048, 4096].contains(bytesPerSector),
              sectorsPerCluster != 0, sectorsPerCluster & (sectorsPerCluster - 1) == 0,
              bs.le16(14) != 0,                       // reserved sectors
              bs.u8(16) != 0,                         // number of FATs
              media == 0xF0 || media >= 0xF8 else { return nil }

        // Extended BPB: FAT32 keeps it at 64, FAT12/16 at 36.
        let ebpb: Int
        if bs.matches("FAT32   ", at: 82) {
            ebpb = 64
        } else if bs.matches("FAT12   ", at: 54) || bs.matches("FAT16   ", at: 54) || bs.matches("FAT     ", at: 54) {
            ebpb = 36
        } else {
            return nil
        }
        var sectors = UInt64(bs.le16(19))
        if sectors == 0 { sectors = UInt64(bs.le32(32)) }

        // Signature 0x29: serial and label present; 0x28 (older DOS): the serial only.
        let extSignature = bs.u8(ebpb + 2)
        var label = extSignature == 0x29
            ? bs.cString(ebpb + 7, 11).map { String($0.reversed().drop { $0 == " " }.reversed()) } : nil
        if label == "NO NAME" || label == "" { label = nil }
        var uuid: String? = nil
        if extSignature == 0x29 || extSignature == 0x28 {  // fstab's UUID=XXXX-XXXX, as blkid prints it
            let id = bs.slice(ebpb + 3, 4)
            uuid = (hexByte(id[3]) + hexByte(id[2]) + "-" + hexByte(id[1]) + hexByte(id[0])).uppercased()
        }
        return FilesystemInfo(type: .vfat, blockSize: Int(bytesPerSector),
                              sizeBytes: sectors * UInt64(bytesPerSector), label: label, uuid: uuid)
    }
}
