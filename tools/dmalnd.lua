-- Wireshark dissector for lnetlab's DMA fabric captures (`lnetlab run --capture`:
-- pcap/dma-NET.pcap, link type USER0 = 147). Each record is one device event (lnd/src/dev/capture.rs):
--   0 event u8 (1 SMSG, 2 TX_SETUP, 3 PULL) | 1 status u8 | 2 reserved u16
--   4 src u32 | 8 dst u32 | 12 nob u32 | 16 cookie u64 | 24 the SMSG's bytes (SMSG only)
-- An SMSG carries one DMA LND message (lnd/src/dmalnd/wire.rs): a 24-byte header, then a control
-- body (NOOP, TX_READY, NAK, GET_DONE) or an LNet header (IMMEDIATE, PUT_REQ, GET_REQ), which is handed to
-- Wireshark's own LNet dissector (behind the 24-byte ksocklnd header it expects), and from there
-- to its Lustre dissector.
-- Use: tshark -X lua_script:tools/dmalnd.lua -r dma-dma0.pcap   (or copy it to Wireshark's plugins)

local fab = Proto("dmafab", "lnetlab DMA fabric event")
local lnd = Proto("dmalnd", "DMA LND message")

local events = { [1] = "SMSG", [2] = "TX_SETUP", [3] = "PULL" }
local statuses = { [0] = "Ok", [1] = "BadKey", [2] = "OutOfBounds", [3] = "NoSuchTx", [4] = "TxConsumed",
    [5] = "NoSuchPeer", [6] = "MailboxFull", [7] = "TooLong", [8] = "BadDesc", [9] = "Cancelled",
    [10] = "Fault", [11] = "LinkDown" }
local types = { [0x01] = "NOOP", [0x02] = "TX_READY", [0x03] = "NAK", [0x04] = "GET_DONE", [0x10] = "IMMEDIATE",
    [0x11] = "PUT_REQ", [0x12] = "GET_REQ" }

local f = fab.fields
f.event = ProtoField.uint8("dmafab.event", "Event", base.DEC, events)
f.status = ProtoField.uint8("dmafab.status", "Device status", base.DEC, statuses)
f.src = ProtoField.uint32("dmafab.src", "Source address", base.DEC)
f.dst = ProtoField.uint32("dmafab.dst", "Destination address", base.DEC)
f.nob = ProtoField.uint32("dmafab.nob", "Bytes", base.DEC)
f.cookie = ProtoField.uint64("dmafab.cookie", "Transmit cookie", base.HEX)

local g = lnd.fields
g.magic = ProtoField.uint32("dmalnd.magic", "Magic", base.HEX)
g.version = ProtoField.uint8("dmalnd.version", "Version", base.DEC)
g.type = ProtoField.uint8("dmalnd.type", "Type", base.HEX, types)
g.credits = ProtoField.uint16("dmalnd.credits", "Credits returned", base.DEC)
g.src_nid = ProtoField.uint64("dmalnd.src_nid", "Source NID", base.HEX)
g.dst_nid = ProtoField.uint64("dmalnd.dst_nid", "Destination NID", base.HEX)
g.get_tag = ProtoField.uint64("dmalnd.get_tag", "GET tag", base.HEX)
g.cookie = ProtoField.uint64("dmalnd.cookie", "Transmit cookie", base.HEX)
g.target_tag = ProtoField.uint64("dmalnd.target_tag", "Target tag", base.HEX)
g.nob = ProtoField.uint32("dmalnd.nob", "Bytes", base.DEC)
g.tag = ProtoField.uint64("dmalnd.tag", "Tag", base.HEX)
g.status = ProtoField.int32("dmalnd.status", "Status", base.DEC)
g.src_tag = ProtoField.uint64("dmalnd.src_tag", "Source tag", base.HEX)

local malformed = ProtoExpert.new("dmalnd.malformed", "Malformed DMA LND message", expert.group.MALFORMED, expert.severity.ERROR)
lnd.experts = { malformed }

local MAGIC = 0x444d4c44 -- "DLMD" read little-endian
local LNET_HDR = 72
-- KSOCK_MSG_LNET, csum 0, zc_req_cookie 0, zc_ack_cookie 0: what Wireshark's LNet dissector reads first.
local KSOCK_HDR = ByteArray.new("c1000000 00000000 0000000000000000 0000000000000000")
local lnet_over_tcp = DissectorTable.get("tcp.port"):get_dissector(988)

-- Hands the LNet header at `off` (and what follows it in `range`) to Wireshark's LNet dissector.
local function lnet(tvb, off, len, pinfo, tree)
    local bytes = KSOCK_HDR .. tvb:range(off, len):bytes()
    lnet_over_tcp:call(bytes:tvb("LNet message"), pinfo, tree)
end

local function dmalnd_message(tvb, pinfo, tree)
    local n = tvb:len()
    local t = tree:add(lnd, tvb(), "DMA LND message")
    if n < 24 or tvb(0, 4):le_uint() ~= MAGIC then
        t:add_proto_expert_info(malformed, "shorter than its 24-byte header or bad magic")
        return "?"
    end
    local ty = tvb(5, 1):uint()
    t:add_le(g.magic, tvb(0, 4))
    t:add_le(g.version, tvb(4, 1))
    t:add_le(g.type, tvb(5, 1))
    t:add_le(g.credits, tvb(6, 2))
    t:add_le(g.src_nid, tvb(8, 8))
    t:add_le(g.dst_nid, tvb(16, 8))
    local name = types[ty] or string.format("type 0x%02x", ty)
    t:append_text(", " .. name .. ", credits " .. tvb(6, 2):le_uint())
    local need = ({ [0x01] = 24, [0x02] = 52, [0x03] = 36, [0x04] = 36, [0x10] = 24 + LNET_HDR, [0x11] = 24 + LNET_HDR + 20, [0x12] = 24 + LNET_HDR + 8 })[ty]
    if need == nil or n < need then
        t:add_proto_expert_info(malformed, need and "body shorter than its type needs" or "unknown type")
        return name
    end
    if ty == 0x02 then
        t:add_le(g.get_tag, tvb(24, 8)); t:add_le(g.cookie, tvb(32, 8)); t:add_le(g.target_tag, tvb(40, 8)); t:add_le(g.nob, tvb(48, 4))
    elseif ty == 0x03 then
        t:add_le(g.tag, tvb(24, 8)); t:add_le(g.status, tvb(32, 4))
    elseif ty == 0x04 then
        t:add_le(g.get_tag, tvb(24, 8)); t:add_le(g.nob, tvb(32, 4))
    elseif ty == 0x10 then
        lnet(tvb, 24, n - 24, pinfo, tree)
    elseif ty == 0x11 then
        local at = 24 + LNET_HDR
        t:add_le(g.src_tag, tvb(at, 8)); t:add_le(g.cookie, tvb(at + 8, 8)); t:add_le(g.nob, tvb(at + 16, 4))
        lnet(tvb, 24, LNET_HDR, pinfo, tree)
    elseif ty == 0x12 then
        t:add_le(g.get_tag, tvb(24 + LNET_HDR, 8))
        lnet(tvb, 24, LNET_HDR, pinfo, tree)
    end
    return name
end

function fab.dissector(tvb, pinfo, tree)
    if tvb:len() < 24 then return 0 end
    local ev, st = tvb(0, 1):uint(), tvb(1, 1):uint()
    local src, dst = tvb(4, 4):le_uint(), tvb(8, 4):le_uint()
    pinfo.cols.protocol = "DMA"
    pinfo.cols.src = tostring(src) .. "@dma"
    pinfo.cols.dst = tostring(dst) .. "@dma"
    local t = tree:add(fab, tvb(0, 24), "DMA fabric " .. (events[ev] or "?") .. " " .. src .. " -> " .. dst .. " (" .. (statuses[st] or st) .. ")")
    t:add(f.event, tvb(0, 1)); t:add(f.status, tvb(1, 1))
    t:add_le(f.src, tvb(4, 4)); t:add_le(f.dst, tvb(8, 4)); t:add_le(f.nob, tvb(12, 4)); t:add_le(f.cookie, tvb(16, 8))
    local info = (events[ev] or "?") .. " " .. (statuses[st] or st)
    if ev == 1 and tvb:len() > 24 then
        -- (LNet's dissector sets the info column for LND messages; this goes first.)
        info = "SMSG " .. dmalnd_message(tvb(24):tvb(), pinfo, tree) .. (st ~= 0 and (" " .. (statuses[st] or st)) or "")
        pinfo.cols.protocol = "DMA LND"
    else
        info = info .. " nob " .. tvb(12, 4):le_uint()
    end
    pinfo.cols.info:prepend(info .. " ")
    return tvb:len()
end

DissectorTable.get("wtap_encap"):add(wtap.USER0, fab)
