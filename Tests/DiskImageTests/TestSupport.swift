import Glibc
import TestSupport

/// A scratch directory removed (with its files) when the test ends, pass or fail.
final class ScratchDirectory {
    let path: String

    init() {
        var template = Array("/tmp/diskimage-test.XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    deinit {
        if let dir = opendir(path) {
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                if name != "." && name != ".." { unlink(path + "/" + name) }
            }
            closedir(dir)
        }
        rmdir(path)
    }
}

/// Runs a program, its output discarded; returns the exit status or -1.
func run(_ argv: [String]) -> Int32 { Subprocess.run(argv, output: .discarded).status }

func programExists(_ name: String) -> Bool { Subprocess.exists(name) }

/// Tools/make-test-image of this checkout, found from this file's real location.
let makeTestImage: String = {
    var resolved = [CChar](repeating: 0, count: Int(PATH_MAX))
    let file = realpath(#filePath, &resolved) != nil
        ? resolved.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } : #filePath
    var parts = file.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)  // Tests/DiskImageTests/TestSupport.swift
    return parts.joined(separator: "/") + "/Tools/make-test-image"
}()



/// A shell command's standard output (stderr discarded), or nil when it cannot start or fails.
func output(ofShell command: String) -> String? {
    guard let pipe = popen(command + " 2>/dev/null", "r") else { return nil }
    var text = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&buffer, 1, buffer.count, pipe)
        if n == 0 { break }
        text += buffer[0..<n]
    }
    return pclose(pipe) == 0 ? String(decoding: text, as: UTF8.self) : nil
}
