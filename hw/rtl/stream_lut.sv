// SPDX-License-Identifier: Apache-2.0
// Lookup table loaded at run time from an AXI4-Stream, read one entry per clock.
`default_nettype none

// Loading: every accepted beat of s_axis writes the next entry, starting at entry 0;
// the load ends with the beat that has TLAST set or with entry DEPTH-1, and the next
// beat starts a new load at entry 0. `loading` is high from the first beat of a load
// until its last one, so the kernel using the table can hold its pixel input meanwhile.
// s_axis_tready is a register (high whenever out of reset): one entry per clock.
// The entries are not reset: ap_rst_n only restarts the load address, a loaded table
// survives it. Reading: rd_data is the entry at rd_addr one clock after a cycle with
// rd_en (a block-RAM read port with read enable, no output register).
module stream_lut #(
    parameter int WIDTH = 9,     // bits of one table entry
    parameter int DEPTH = 4096,  // entries in the table
    localparam int TDATA_W = (WIDTH + 7) / 8 * 8,                  // s_axis_tdata width
    localparam int ADDR_BITS = DEPTH > 1 ? $clog2(DEPTH) : 1       // table address width
) (
    input  wire                  ap_clk,
    input  wire                  ap_rst_n,

    input  wire  [TDATA_W-1:0]   s_axis_tdata,
    input  wire                  s_axis_tvalid,
    output logic                 s_axis_tready,
    input  wire                  s_axis_tlast,
    output logic                 loading,

    input  wire                  rd_en,
    input  wire  [ADDR_BITS-1:0] rd_addr,
    output logic [WIDTH-1:0]     rd_data
);

    localparam logic [ADDR_BITS-1:0] LAST_ADDR = ADDR_BITS'(DEPTH - 1);

    logic [WIDTH-1:0]     mem [DEPTH];
    logic [ADDR_BITS-1:0] wr_addr;

    wire wr_en   = s_axis_tvalid && s_axis_tready;
    wire wr_last = s_axis_tlast || wr_addr == LAST_ADDR;

    always_ff @(posedge ap_clk) begin
        if (!ap_rst_n) begin
            s_axis_tready <= 1'b0;
            loading       <= 1'b0;
            wr_addr       <= '0;
        end else begin
            s_axis_tready <= 1'b1;
            if (wr_en) begin
                loading <= !wr_last;
                wr_addr <= wr_last ? '0 : wr_addr + 1'b1;
            end
        end
    end

    always_ff @(posedge ap_clk) begin
        if (wr_en) begin
            mem[wr_addr] <= s_axis_tdata[WIDTH-1:0];
        end
    end

    always_ff @(posedge ap_clk) begin
        if (rd_en) begin
            rd_data <= mem[rd_addr];
        end
    end

    if (TDATA_W > WIDTH) begin : g_unused_pad
        wire unused_pad = &{1'b0, s_axis_tdata[TDATA_W-1:WIDTH]};
    end

endmodule

`default_nettype wire
