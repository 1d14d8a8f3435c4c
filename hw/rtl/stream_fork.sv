// SPDX-License-Identifier: Apache-2.0
// AXI4-Stream fork: every input beat is handed to each of N_OUTPUTS outputs (FINN's
// DuplicateStreams), each output under its own backpressure.
`default_nettype none

// An input register slice (registered s_axis_tready), then one held beat with a pending
// bit per output: output i shows the beat until it takes it (tvalid & tready), a new beat
// is taken in when no output still waits for the held one (in the cycle the last one
// takes it: one beat per clock when every output is ready). No beat is lost or repeated:
// a pending bit is cleared only by its own output's handshake. Only the pending bits are
// reset; the datapath is not.
module stream_fork #(
    parameter int WIDTH = 8,     // TDATA bits of one beat (copied whole to every output)
    parameter int N_OUTPUTS = 2  // number of output streams
) (
    input  wire                          ap_clk,
    input  wire                          ap_rst_n,

    input  wire  [WIDTH-1:0]             s_axis_tdata,
    input  wire                          s_axis_tvalid,
    output logic                         s_axis_tready,

    // output i: bits [i*WIDTH +: WIDTH], tvalid[i], tready[i]
    output logic [N_OUTPUTS*WIDTH-1:0]   m_axis_tdata,
    output logic [N_OUTPUTS-1:0]         m_axis_tvalid,
    input  wire  [N_OUTPUTS-1:0]         m_axis_tready
);

    logic [WIDTH-1:0]     in_tdata;
    logic                 in_tvalid, in_tready;
    logic [WIDTH-1:0]     held;
    logic [N_OUTPUTS-1:0] pending;  // outputs that have not yet taken the held beat

    axis_skid_buffer #(.WIDTH(WIDTH)) u_in (
        .ap_clk(ap_clk), .ap_rst_n(ap_rst_n),
        .s_axis_tdata(s_axis_tdata), .s_axis_tvalid(s_axis_tvalid),
        .s_axis_tready(s_axis_tready),
        .m_axis_tdata(in_tdata), .m_axis_tvalid(in_tvalid), .m_axis_tready(in_tready)
    );

    // outputs still waiting after this cycle's handshakes
    wire [N_OUTPUTS-1:0] waiting = pending & ~m_axis_tready;
    assign in_tready = ~|waiting;
    assign m_axis_tvalid = pending;
    assign m_axis_tdata = {N_OUTPUTS{held}};

    // control: reset
    always_ff @(posedge ap_clk) begin
        if (!ap_rst_n) begin
            pending <= '0;
        end else if (in_tready) begin
            pending <= in_tvalid ? '1 : '0;
        end else begin
            pending <= waiting;
        end
    end

    // datapath: no reset
    always_ff @(posedge ap_clk) begin
        if (in_tready && in_tvalid) begin
            held <= in_tdata;
        end
    end

endmodule

`default_nettype wire
