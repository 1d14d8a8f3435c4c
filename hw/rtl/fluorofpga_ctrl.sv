// SPDX-License-Identifier: Apache-2.0
// fluorofpga_ctrl: the board kernel's AXI4-Lite register file and stream control.
`default_nettype none

// Sits between the board's AXI DMA and the network (the stitched FINN layers, codes in and
// codes out) and implements the register map the PYNQ driver uses
// (fluorofpga.host.pynq_backend, byte offsets on s_axi_control, 32-bit words):
//
//   0x000 CTRL          W  bit 0: soft reset (self-clearing): the network is held in reset
//                          for RESET_CYCLES clocks, the pixels in flight are dropped, the
//                          tile and packet counters restart; registers and table flags stay
//   0x004 STATUS        R  bit 0 idle (no pixel inside the kernel, not resetting),
//                          bits 1 / 2: a pixel-in / pixel-out table was committed
//   0x008 ID            R  0x464C4631 ("FLF1")
//   0x00C TILE          R  TILE_H << 16 | TILE_W
//   0x010 BITS          R  IN_BITS | OUT_BITS << 8 (code bits per value)
//   0x014 PACKET_BYTES  RW TLAST on the output pixel that reaches this many bytes since the
//                          last TLAST (0: only at the end of a tile); TLAST always ends a tile
//   0x018 TILES_DONE    R  tiles completed (last output pixel sent) since the last reset
//   0x01C IN_LUT_COUNT  W  commits the pixel-in table (sets STATUS bit 1)
//   0x020 OUT_LUT_COUNT W  commits the pixel-out table (sets STATUS bit 2)
//   0x024 CHANNELS      R  IN_CHANNELS | OUT_CHANNELS << 8
//   0x40000.. / 0x80000.. table windows: writes are taken (OKAY) and discarded. This
//                          kernel streams codes: the host applies the camera's tables (the
//                          driver's code mode); the table flags only record the commit.
//   anything else reads 0; writes to read-only words are ignored (OKAY).
//
// Every write is taken as a whole word (WSTRB is not decoded: PYNQ's MMIO writes words).
// AXI4-Lite handshakes are registered (no combinational path from an input to an output).
// A pixel is IN_BEATS input beats and OUT_BEATS output beats (a SIM network's first and
// last layers take / give one channel a beat); IN_W / OUT_W are the beats' widths.
module fluorofpga_ctrl #(
    parameter int TILE_H = 128,       // compiled tile height, pixels
    parameter int TILE_W = 128,       // compiled tile width, pixels
    parameter int IN_BITS = 8,        // code bits of one input value (REG_BITS)
    parameter int OUT_BITS = 8,       // code bits of one output value (REG_BITS)
    parameter int IN_CHANNELS = 1,    // values per input pixel (REG_CHANNELS)
    parameter int OUT_CHANNELS = 1,   // values per output pixel (REG_CHANNELS)
    parameter int IN_W = 8,           // s_axis_tdata width (whole bytes)
    parameter int OUT_W = 8,          // m_axis_tdata width (whole bytes)
    parameter int IN_BEATS = 1,       // input beats per pixel
    parameter int OUT_BEATS = 1,      // output beats per pixel
    parameter int RESET_CYCLES = 16,  // clocks the network is held in reset by CTRL
    localparam int ADDR_W = 20,       // 1 MiB register space (KERNEL_RANGE)
    localparam int OUT_BYTES = OUT_W / 8,
    localparam int TILE_PIXELS = TILE_H * TILE_W
) (
    input  wire                ap_clk,
    input  wire                ap_rst_n,

    input  wire  [ADDR_W-1:0]  s_axi_control_awaddr,
    input  wire                s_axi_control_awvalid,
    output logic               s_axi_control_awready,
    input  wire  [31:0]        s_axi_control_wdata,
    input  wire  [3:0]         s_axi_control_wstrb,
    input  wire                s_axi_control_wvalid,
    output logic               s_axi_control_wready,
    output logic [1:0]         s_axi_control_bresp,
    output logic               s_axi_control_bvalid,
    input  wire                s_axi_control_bready,
    input  wire  [ADDR_W-1:0]  s_axi_control_araddr,
    input  wire                s_axi_control_arvalid,
    output logic               s_axi_control_arready,
    output logic [31:0]        s_axi_control_rdata,
    output logic [1:0]         s_axi_control_rresp,
    output logic               s_axi_control_rvalid,
    input  wire                s_axi_control_rready,

    // from the DMA (MM2S): IN_BEATS beats a pixel; TLAST (end of a DMA transfer) unused
    input  wire  [IN_W-1:0]    s_axis_tdata,
    input  wire                s_axis_tvalid,
    output logic               s_axis_tready,
    input  wire                s_axis_tlast,
    // to the DMA (S2MM): OUT_BEATS beats a pixel, TLAST per packet and at a tile's end
    output logic [OUT_W-1:0]   m_axis_tdata,
    output logic               m_axis_tvalid,
    input  wire                m_axis_tready,
    output logic               m_axis_tlast,

    // the network
    output logic               net_rst_n,
    output logic [IN_W-1:0]    net_in_tdata,
    output logic               net_in_tvalid,
    input  wire                net_in_tready,
    input  wire  [OUT_W-1:0]   net_out_tdata,
    input  wire                net_out_tvalid,
    output logic               net_out_tready
);

    localparam logic [31:0] KERNEL_ID = 32'h464C_4631;
    localparam logic [ADDR_W-1:0] REG_CTRL = 'h000, REG_STATUS = 'h004, REG_ID = 'h008,
        REG_TILE = 'h00C, REG_BITS = 'h010, REG_PACKET_BYTES = 'h014, REG_TILES_DONE = 'h018,
        REG_IN_LUT_COUNT = 'h01C, REG_OUT_LUT_COUNT = 'h020, REG_CHANNELS = 'h024;

    // ------------------------------------------------------------------ soft reset
    logic [$clog2(RESET_CYCLES + 1)-1:0] rst_left;  // clocks of soft reset still to go
    wire resetting = rst_left != 0;
    always_ff @(posedge ap_clk) net_rst_n <= ap_rst_n && !resetting;

    // ------------------------------------------------------------------ registers
    logic [31:0] packet_bytes;  // REG_PACKET_BYTES
    logic [31:0] tiles_done;    // REG_TILES_DONE
    logic [1:0]  tables;        // STATUS bits 2:1
    logic [31:0] in_flight;     // pixels taken in whole and not yet sent out whole
    logic [$clog2(IN_BEATS + 1)-1:0] in_phase;    // beats of the pixel coming in
    logic [$clog2(OUT_BEATS + 1)-1:0] out_phase;  // beats of the pixel going out

    // ------------------------------------------------------------------ AXI4-Lite write
    wire wr = s_axi_control_awready && s_axi_control_awvalid
              && s_axi_control_wready && s_axi_control_wvalid;
    assign s_axi_control_bresp = 2'b00;
    always_ff @(posedge ap_clk) begin
        if (!ap_rst_n) begin
            s_axi_control_awready <= 1'b0;
            s_axi_control_wready <= 1'b0;
            s_axi_control_bvalid <= 1'b0;
        end else begin
            // ready for one cycle once address and data are both offered and the previous
            // response is gone
            s_axi_control_awready <= !s_axi_control_awready && s_axi_control_awvalid
                                     && s_axi_control_wvalid && !s_axi_control_bvalid;
            s_axi_control_wready <= !s_axi_control_awready && s_axi_control_awvalid
                                    && s_axi_control_wvalid && !s_axi_control_bvalid;
            if (wr) s_axi_control_bvalid <= 1'b1;
            else if (s_axi_control_bready) s_axi_control_bvalid <= 1'b0;
        end
    end

    // ------------------------------------------------------------------ AXI4-Lite read
    logic [31:0] rword;
    always_comb begin
        unique case (s_axi_control_araddr & ~ADDR_W'(3))
            REG_STATUS:       rword = {29'd0, tables, in_flight == 0 && in_phase == 0
                                                      && out_phase == 0 && !resetting};
            REG_ID:           rword = KERNEL_ID;
            REG_TILE:         rword = {16'(TILE_H), 16'(TILE_W)};
            REG_BITS:         rword = {16'd0, 8'(OUT_BITS), 8'(IN_BITS)};
            REG_PACKET_BYTES: rword = packet_bytes;
            REG_TILES_DONE:   rword = tiles_done;
            REG_CHANNELS:     rword = {16'd0, 8'(OUT_CHANNELS), 8'(IN_CHANNELS)};
            default:          rword = 32'd0;
        endcase
    end
    assign s_axi_control_rresp = 2'b00;
    always_ff @(posedge ap_clk) begin
        if (!ap_rst_n) begin
            s_axi_control_arready <= 1'b0;
            s_axi_control_rvalid <= 1'b0;
            s_axi_control_rdata <= 32'd0;
        end else begin
            s_axi_control_arready <= !s_axi_control_arready && s_axi_control_arvalid
                                     && !s_axi_control_rvalid;
            if (s_axi_control_arready && s_axi_control_arvalid) begin
                s_axi_control_rvalid <= 1'b1;
                s_axi_control_rdata <= rword;
            end else if (s_axi_control_rready) begin
                s_axi_control_rvalid <= 1'b0;
            end
        end
    end

    // ------------------------------------------------------------------ streams
    assign net_in_tdata = s_axis_tdata;
    assign net_in_tvalid = s_axis_tvalid && !resetting && net_rst_n;
    assign s_axis_tready = net_in_tready && !resetting && net_rst_n;

    logic [$clog2(TILE_PIXELS + 1)-1:0] out_pixel;  // output pixels sent in this tile
    logic [31:0] out_in_packet;                       // bytes sent since the last TLAST
    wire pixel_out_end = out_phase == OUT_BEATS - 1;  // the pixel's last output beat
    wire tile_end = pixel_out_end && out_pixel == TILE_PIXELS - 1;
    // TLAST on the last beat of the pixel that reaches PACKET_BYTES (whole pixels only)
    wire packet_end = pixel_out_end && packet_bytes != 0
                      && out_in_packet + OUT_BYTES >= packet_bytes;
    assign m_axis_tdata = net_out_tdata;
    assign m_axis_tvalid = net_out_tvalid && !resetting && net_rst_n;
    assign m_axis_tlast = tile_end || packet_end;
    assign net_out_tready = m_axis_tready && !resetting && net_rst_n;

    wire in_beat = s_axis_tvalid && s_axis_tready;
    wire out_beat = m_axis_tvalid && m_axis_tready;
    wire pixel_in = in_beat && in_phase == IN_BEATS - 1;
    wire pixel_out = out_beat && pixel_out_end;

    always_ff @(posedge ap_clk) begin
        if (!ap_rst_n) begin
            rst_left <= '0;
            packet_bytes <= 32'd0;
            tables <= 2'b00;
        end else begin
            if (resetting) rst_left <= rst_left - 1'b1;
            if (wr) begin
                unique case (s_axi_control_awaddr & ~ADDR_W'(3))
                    REG_CTRL:          if (s_axi_control_wdata[0]) rst_left <= RESET_CYCLES;
                    REG_PACKET_BYTES:  packet_bytes <= s_axi_control_wdata;
                    REG_IN_LUT_COUNT:  tables[0] <= 1'b1;
                    REG_OUT_LUT_COUNT: tables[1] <= 1'b1;
                    default: ;  // read-only words and the table windows
                endcase
            end
        end
    end

    always_ff @(posedge ap_clk) begin
        if (!ap_rst_n || resetting) begin
            in_flight <= 32'd0;
            in_phase <= '0;
            out_phase <= '0;
            out_pixel <= '0;
            out_in_packet <= 32'd0;
            tiles_done <= 32'd0;
        end else begin
            in_flight <= in_flight + 32'(pixel_in) - 32'(pixel_out);
            if (in_beat) in_phase <= pixel_in ? '0 : in_phase + 1'b1;
            if (out_beat) begin
                out_phase <= pixel_out_end ? '0 : out_phase + 1'b1;
                out_in_packet <= m_axis_tlast ? 32'd0 : out_in_packet + OUT_BYTES;
                if (pixel_out_end) out_pixel <= tile_end ? '0 : out_pixel + 1'b1;
                if (tile_end) tiles_done <= tiles_done + 1;
            end
        end
    end

    wire unused = &{1'b0, s_axis_tlast, s_axi_control_wstrb};

endmodule

`default_nettype wire
