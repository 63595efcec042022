import Sandbox
import Testing

@Suite struct InputParsingTests {
    @Test(arguments: [
        ("512M", UInt64(512) << 20), ("5G", 5 << 30), ("4096", 4096), ("8K", 8192), ("8k", 8192),
        ("1MiB", 1 << 20), ("2GB", 2 << 30), ("1T", 1 << 40),
    ] as [(String, UInt64)])
    func sizesParse(text: String, bytes: UInt64) {
        #expect(ByteSize.parse(text) == bytes)
    }

    @Test(arguments: ["", "M", "-1", "1.5G", "12Q", "99999999999999999999", "20000000000T", " 5M", "0x10"])
    func badSizesAreRejected(text: String) {
        #expect(ByteSize.parse(text) == nil)
    }

    @Test func sizesFormat() {
        #expect(ByteSize.format(512 << 20) == "512M")
        #expect(ByteSize.format(1536 << 20) == "1.5G")
        #expect(ByteSize.format(100) == "100B")
    }

    @Test(arguments: ["test1", "a", "my-box_2.0", "x+y@z", String(repeating: "n", count: 64)])
    func validNames(name: String) {
        #expect(SandboxName.problem(with: name) == nil)
    }

    @Test(arguments: [
        ("", SandboxName.Problem.empty), (".", .leadingDotOrDash), ("..", .leadingDotOrDash), ("-x", .leadingDotOrDash),
        (String(repeating: "n", count: 65), .tooLong(65)), ("a b", .badCharacter(0x20)), ("tab\t", .badCharacter(0x09)),
        ("caf\u{e9}", .badCharacter(0xc3)), ("a/b", .badCharacter(0x2f)), ("nl\n", .badCharacter(0x0a)),
    ] as [(String, SandboxName.Problem)])
    func invalidNames(name: String, problem: SandboxName.Problem) {
        #expect(SandboxName.problem(with: name) == problem)
    }
}
